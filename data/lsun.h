// LSUN scene categories (bedroom by default) from the official release: two LMDB environments
// <category>_train_lmdb/ and <category>_val_lmdb/ (data.mdb), keys the 40-hex-digit image ids,
// values the encoded images (WebP; JPEG and PNG accepted). Read with liblmdb read-only and
// without the lock file (MDB_RDONLY | MDB_NOLOCK: the release may sit on a read-only share),
// WebP decoded with libwebp; both optional at build time (lsun_missing_packages()).
//
// Splits: test = the val LMDB; valid = the lsun_valid_count(N) train records with the smallest
// (FNV-1a-64(key), key); train = the other train records, in key order, the first `limit` of
// them with DataOptions::limit. Preprocessing as for a folder (folder_preprocess).
//
// The build is resumable: decoded records are appended in checksummed chunks to a partial file
// beside the cache (<cache>.u8.part); an interrupted build continues from its last complete
// chunk. The cache itself is only written (atomically, by load_dataset) once every record is
// done. See docs/data.md.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "data/dataset.h"
#include "data/image.h"

namespace prsr::data {

// "" when this build can read LSUN, else the Debian packages it was built without
// ("liblmdb-dev", "libwebp-dev" or "liblmdb-dev and libwebp-dev").
std::string lsun_missing_packages();

// What the cache needs before decoding: found by lsun_source, which throws prsr::Error when the
// build lacks the libraries (naming the packages) or the LMDB is missing (naming what, where it
// looked and where to download it).
struct LsunSource {
  std::string lmdb;          // the LMDB folder this split reads (<dir>/<category>_train_lmdb or _val_lmdb)
  std::string label;         // "lsun bedroom train"
  std::string cache_prefix;  // "lsun-bedroom", or "lsun-bedroom-first<limit>" for a --limit train split
};
LsunSource lsun_source(const DataOptions& opt, Split split);

struct LsunDecoded {
  std::vector<uint8_t> hr;  // n * 32*32*3, HWC, in key order
  int n = 0, skipped = 0;
  int resumed = 0;  // records taken from the partial file of an interrupted build
};
// Decodes the split, resuming from / appending to `part_path` ("" = no partial file). `key` is
// the cache key: a partial file of another key (or another record count) is started afresh.
LsunDecoded lsun_build(const DataOptions& opt, Split split, const LsunSource& src, uint64_t key,
                       const std::string& part_path);

// Valid records among n train records: max(ceil(n / 100), min(1000, n / 10)), at most n - 1
// (0 when n < 2). 3,033,042 -> 30,331; 100,000 -> 1,000; 5,000 -> 500; 30 -> 3.
size_t lsun_valid_count(size_t n);

// Indices (ascending, i.e. key order when `keys` is LMDB order) of the train records of `split`
// (Train or Valid; Test is the other LMDB): see the top of this file. limit > 0 keeps the first
// `limit` train indices.
std::vector<size_t> lsun_split_indices(const std::vector<std::string_view>& keys, Split split, long limit);

// One record's bytes -> 8-bit image: WebP (RIFF....WEBP, decoded to RGB, alpha dropped), else
// PNG / JPEG as decode_image. prsr::Error naming `name` when empty, not an image or corrupt.
Image decode_lsun_value(const uint8_t* data, size_t size, const std::string& name);

}  // namespace prsr::data
