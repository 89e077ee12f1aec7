// Reading a whole data file into memory, decompressing it if it is gzip.
//
// Internal to libfedsgd (the IDX and CSV loaders share it). zlib's gz*
// functions read plain files transparently, so .gz and uncompressed inputs
// take one path and the loaders never look at file names to decide.
#pragma once

#include <string>

namespace fedsgd {

// The bytes of `path`, gunzipped if it is a gzip file. Throws fedsgd::Error
// naming the file when it is missing, a directory, unreadable, or a gzip
// stream that is truncated or corrupt.
std::string ReadWholeFile(const std::string& path);

}  // namespace fedsgd
