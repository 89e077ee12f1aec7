// RaiseFileLimit (see file_limit.h).
#include "file_limit.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstring>

namespace fedsgd {

FileLimit RaiseFileLimit() {
  FileLimit out;
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    out.error = std::strerror(errno);
    return out;
  }
  out.soft = limit.rlim_cur;
  out.hard = limit.rlim_max;
  if (limit.rlim_cur >= limit.rlim_max) return out;
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    out.error = std::strerror(errno);
    return out;
  }
  out.soft = limit.rlim_cur;
  out.raised = true;
  return out;
}

}  // namespace fedsgd
