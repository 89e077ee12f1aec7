#include "fedsgd/endpoint.h"

namespace fedsgd {

std::string ResolvePublishEndpoint(const std::string& announced, const std::string& reached) {
  for (const std::string wildcard : {"tcp://*:", "tcp://0.0.0.0:"}) {
    if (announced.rfind(wildcard, 0) != 0) continue;
    const std::size_t colon = reached.rfind(':');
    if (reached.rfind("tcp://", 0) == 0 && colon != std::string::npos && colon > 6) {
      return reached.substr(0, colon + 1) + announced.substr(wildcard.size());
    }
  }
  return announced;
}

}  // namespace fedsgd
