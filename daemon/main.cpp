#include <CLI/CLI.hpp>
int main(int argc, char** argv) {
  CLI::App app{"fedsgd-daemon"};
  app.set_version_flag("--version", "fedsgd-daemon " FEDSGD_VERSION);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
