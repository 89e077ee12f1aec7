// `keygen` (see fedsgd/keygen_command.h).
#include "fedsgd/keygen_command.h"

#include <filesystem>
#include <ostream>

#include "fedsgd/curve_keys.h"

namespace fedsgd {

CLI::App* AddKeygenCommand(CLI::App& app, KeygenOptions& options, const std::string& default_name) {
  CLI::App* cmd = app.add_subcommand(
      "keygen",
      "Write a new CURVE key pair (ZeroMQ RFC 26) for encrypted, authenticated connections: "
      "PREFIX.key (public, give it away) and PREFIX.key_secret (secret, mode 0600, stays here). "
      "See docs/security.md");
  cmd->add_option("--out", options.out,
                  "DIR (writes DIR/" + default_name +
                      ".key and .key_secret) or PREFIX (writes "
                      "PREFIX.key and PREFIX.key_secret); default: ./" +
                      default_name);
  return cmd;
}

void RunKeygen(const KeygenOptions& options, const std::string& default_name,
               const std::string& next_step, std::ostream& out) {
  std::string prefix = options.out.empty() ? default_name : options.out;
  if (std::filesystem::is_directory(prefix)) {
    prefix = (std::filesystem::path(prefix) / default_name).string();
  }
  const curve::KeyPair keys = curve::Generate();
  curve::WriteKeyPair(prefix, keys);
  out << "secret key: " << curve::SecretPath(prefix) << " (mode 0600, keep it here)\n"
      << "public key: " << curve::PublicPath(prefix) << " " << keys.public_key << "\n"
      << next_step << "\n";
}

}  // namespace fedsgd
