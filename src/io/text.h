// Text inputs (evaluation and calibration text): read whole, checked to be non-empty UTF-8.
#pragma once

#include <string>

namespace obr {

// Reads a UTF-8 text file. Errors name the file: missing, empty, or invalid UTF-8 (with the
// byte offset of the first bad sequence). min_bytes guards against a too-short text.
std::string read_text_file(const std::string& path, size_t min_bytes = 1);

// Byte offset of the first invalid UTF-8 sequence, or std::string::npos if valid.
size_t find_invalid_utf8(const std::string& s);

}  // namespace obr
