// Endpoint text shared by the programs that connect to a coordinator.
#pragma once

#include <string>

namespace fedsgd {

// The PUB endpoint to connect to, given the one a coordinator announced in
// its Welcome and the ROUTER endpoint this program reached it on:
// tcp://*:P and tcp://0.0.0.0:P mean "the host you reached me on, port P";
// anything else is returned as it is.
std::string ResolvePublishEndpoint(const std::string& announced, const std::string& reached);

}  // namespace fedsgd
