// The coordinator's limit on open file descriptors. Every daemon holds one
// TCP connection to the ROUTER (and one to the PUB), and so does every
// attacker's idle connection until ZMQ_HANDSHAKE_IVL closes it: 1,024, the
// usual soft default, is not enough for 1,000 devices (docs/security.md).
//
// RaiseFileLimit raises the soft RLIMIT_NOFILE to the hard limit, only when
// it is lower: under the packaged unit, LimitNOFILE=65536 sets both, so
// setrlimit is never called there and SystemCallFilter=~@resources can stay.
// Call it once at start, from any thread. Never throws: a refusal is
// reported in the result.
#pragma once

#include <cstdint>
#include <string>

namespace fedsgd {

struct FileLimit {
  std::uint64_t soft = 0;  // the limit in force after the call
  std::uint64_t hard = 0;
  bool raised = false;
  std::string error;  // why it could not be raised, empty when it was not needed or worked
};

FileLimit RaiseFileLimit();

}  // namespace fedsgd
