// LSUN from its LMDB release: the split rule, WebP decoding, the read-only LMDB reader and the
// resumable, parallel cache build (see data/lsun.h and docs/data.md).
#include "data/lsun.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <numeric>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef PRSR_HAVE_LMDB
#include <lmdb.h>
#endif
#ifdef PRSR_HAVE_WEBP
#include <webp/decode.h>
#endif

#include "data/preprocess.h"
#include "data/progress.h"
#include "engine/error.h"

namespace fs = std::filesystem;

namespace prsr::data {
namespace {

constexpr size_t kPixels = 32 * 32 * 3;  // one preprocessed image, HWC
constexpr int kMaxDim = 1 << 15;         // as image.cpp: 32768 pixels per side, 2^28 pixels
constexpr uint64_t kMaxPixels = 1ull << 28;

uint64_t fnv1a64(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// A key for messages: as text when printable (the release's 40 hex digits), else in hex.
[[maybe_unused]] std::string key_text(std::string_view k) {
  bool printable = !k.empty();
  for (unsigned char c : k) printable = printable && std::isprint(c);
  if (printable) return std::string(k);
  std::string s = "0x";
  char b[3];
  for (unsigned char c : k) std::snprintf(b, sizeof b, "%02x", c), s += b;
  return s;
}

std::string missing_message(const std::string& dir, const std::string& cat, const std::string& missing) {
  return "LSUN " + cat + " not found: " + missing + " (looked in " + dir + "/ for " + cat + "_train_lmdb/ and " + cat +
         "_val_lmdb/, each holding data.mdb); download " + cat + "_train_lmdb.zip and " + cat +
         "_val_lmdb.zip from http://dl.yf.io/lsun/scenes/ (or run `python3 download.py -c " + cat +
         "` from https://github.com/fyu/lsun), unzip into " + dir +
         "/ or point --data-dir at the folder that holds them";
}

// ---------------------------------------------------------------------------------------------
// The partial file of a resumable build: a 32-byte header, then chunks of records in order.
//    header: char[8] "PRSRPART", u32 version (1), u32 record bytes (1 + 3072),
//            u64 cache key, u64 records in the split
//    chunk:  u32 first record, u32 count, u32 crc32 of the body, u32 reserved (0),
//            body: count records of 1 status byte (1 decoded, 0 skipped) + 3072 pixels (zeros
//            when skipped)
// A chunk is written with one write and fdatasync'ed; on resume the chunks are read while they
// are complete, in sequence and match their crc, and the file is cut after the last good one.
// ---------------------------------------------------------------------------------------------

constexpr char kPartMagic[8] = {'P', 'R', 'S', 'R', 'P', 'A', 'R', 'T'};
constexpr size_t kRecord = 1 + kPixels;

struct PartHeader {
  char magic[8];
  uint32_t version, record_bytes;
  uint64_t key, total;
};
struct ChunkHeader {
  uint32_t first, count, crc, reserved;
};
static_assert(sizeof(PartHeader) == 32 && sizeof(ChunkHeader) == 16, "partial file layout");

bool read_full(int fd, void* dst, size_t n) {
  auto* p = static_cast<uint8_t*>(dst);
  while (n > 0) {
    const ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r, n -= (size_t)r;
  }
  return true;
}

bool write_full(int fd, const void* src, size_t n) {
  const auto* p = static_cast<const uint8_t*>(src);
  while (n > 0) {
    const ssize_t r = ::write(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r, n -= (size_t)r;
  }
  return true;
}

uint32_t crc_of(const uint8_t* p, size_t n) {
  uLong c = crc32(0L, Z_NULL, 0);
  while (n > 0) {  // zlib takes uInt lengths
    const uInt step = (uInt)std::min<size_t>(n, 1u << 30);
    c = crc32(c, p, step);
    p += step, n -= step;
  }
  return (uint32_t)c;
}

struct PartFile {
  int fd = -1;
  std::string path;
  ~PartFile() {
    if (fd >= 0) ::close(fd);
  }

  // Opens (or creates) the file and calls take(status, pixels) for every record of its complete
  // chunks, in order; returns how many records that was. With no usable file (cannot be
  // created: a read-only cache folder) fd stays -1 and the build is simply not resumable.
  template <class Take>
  size_t open(const std::string& p, uint64_t key, uint64_t total, Take take) {
    path = p;
    if (p.empty()) return 0;
    std::error_code ec;
    fs::create_directories(fs::path(p).parent_path(), ec);
    fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      std::fprintf(stderr, "warning: cannot write %s (%s); an interrupted build will start over\n", p.c_str(),
                   std::strerror(errno));
      return 0;
    }
    PartHeader h{};
    size_t done = 0;
    off_t good = 0;
    if (read_full(fd, &h, sizeof h) && std::memcmp(h.magic, kPartMagic, 8) == 0 && h.version == 1 &&
        h.record_bytes == kRecord && h.key == key && h.total == total) {
      good = sizeof h;
      std::vector<uint8_t> body;
      ChunkHeader c;
      while (read_full(fd, &c, sizeof c) && c.first == done && c.count > 0 && c.count <= total - done) {
        body.resize((size_t)c.count * kRecord);
        if (!read_full(fd, body.data(), body.size()) || crc_of(body.data(), body.size()) != c.crc) break;
        for (size_t i = 0; i < c.count; ++i) take(body[i * kRecord] != 0, body.data() + i * kRecord + 1);
        done += c.count;
        good += (off_t)(sizeof c + body.size());
      }
    }
    if (good == 0) {  // new, or another key / size: start afresh
      h = PartHeader{};
      std::memcpy(h.magic, kPartMagic, 8);
      h.version = 1;
      h.record_bytes = kRecord;
      h.key = key;
      h.total = total;
      if (::ftruncate(fd, 0) != 0 || ::lseek(fd, 0, SEEK_SET) != 0 || !write_full(fd, &h, sizeof h)) return fail(0);
      good = sizeof h;
    } else if (::ftruncate(fd, good) != 0) {
      return fail(0);  // cannot drop a torn tail: resume nothing rather than append after it
    }
    if (::lseek(fd, good, SEEK_SET) != good) return fail(0);
    return done;
  }

  // Appends one chunk: records first .. first + count - 1 (body as in the layout above).
  void append(uint32_t first, uint32_t count, const std::vector<uint8_t>& body) {
    if (fd < 0) return;
    ChunkHeader c{first, count, crc_of(body.data(), body.size()), 0};
    if (!write_full(fd, &c, sizeof c) || !write_full(fd, body.data(), body.size()) || ::fdatasync(fd) != 0) fail(0);
  }

  size_t fail(size_t r) {
    std::fprintf(stderr, "warning: cannot write %s (%s); an interrupted build will start over\n", path.c_str(),
                 std::strerror(errno));
    ::close(fd);
    fd = -1;
    std::remove(path.c_str());
    return r;
  }
};

// ---------------------------------------------------------------------------------------------
// LMDB, read-only: every key and value pointer of the main database, in key order. The
// pointers point into LMDB's read-only memory map and stay valid while the Lmdb lives (its read
// transaction stays open); decoding threads read them directly.
// ---------------------------------------------------------------------------------------------

#if defined(PRSR_HAVE_LMDB)
struct Lmdb {
  MDB_env* env = nullptr;
  MDB_txn* txn = nullptr;
  std::vector<std::string_view> keys;
  std::vector<std::pair<const uint8_t*, size_t>> values;

  explicit Lmdb(const std::string& dir) {
    auto ok = [&](int rc, const char* what) {
      if (rc != 0) {
        close();
        throw Error("cannot read the LMDB " + dir + "/: " + what + ": " + mdb_strerror(rc));
      }
    };
    ok(mdb_env_create(&env), "mdb_env_create");
    // MDB_NOLOCK: no lock.mdb is opened or written (safe: nothing writes the release while we
    // read it); MDB_RDONLY: data.mdb is opened O_RDONLY and mapped read-only.
    ok(mdb_env_open(env, dir.c_str(), MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0444), "open");
    ok(mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn), "begin");
    MDB_dbi dbi;
    ok(mdb_dbi_open(txn, nullptr, 0, &dbi), "open the database");
    MDB_stat st;
    if (mdb_stat(txn, dbi, &st) == 0) {
      keys.reserve(st.ms_entries);
      values.reserve(st.ms_entries);
    }
    MDB_cursor* cur = nullptr;
    ok(mdb_cursor_open(txn, dbi, &cur), "cursor");
    MDB_val k, v;
    int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      keys.emplace_back(static_cast<const char*>(k.mv_data), k.mv_size);
      values.emplace_back(static_cast<const uint8_t*>(v.mv_data), v.mv_size);
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND) ok(rc, "reading the records");
  }
  void close() {
    if (txn) mdb_txn_abort(txn);
    if (env) mdb_env_close(env);
    txn = nullptr, env = nullptr;
  }
  ~Lmdb() { close(); }
  Lmdb(const Lmdb&) = delete;
  Lmdb& operator=(const Lmdb&) = delete;
};
#endif

#if defined(PRSR_HAVE_WEBP)
Image decode_webp(const uint8_t* p, size_t n, const std::string& name) {
  WebPBitstreamFeatures f;
  if (WebPGetFeatures(p, n, &f) != VP8_STATUS_OK) throw Error(name + ": corrupt WebP (bad header)");
  if (f.has_animation) throw Error(name + ": animated WebP is not supported");
  if (f.width <= 0 || f.height <= 0 || f.width > kMaxDim || f.height > kMaxDim ||
      (uint64_t)f.width * f.height > kMaxPixels)
    throw Error(name + ": WebP image too large (" + std::to_string(f.width) + "x" + std::to_string(f.height) + ")");
  Image img;
  img.w = f.width;
  img.h = f.height;
  img.c = 3;
  img.px.resize((size_t)img.w * img.h * 3);
  // RGB: an alpha channel is dropped, not composited (as for PNG, docs/data.md).
  if (!WebPDecodeRGBInto(p, n, img.px.data(), img.px.size(), img.w * 3))
    throw Error(name + ": corrupt WebP (truncated or damaged data)");
  return img;
}
#endif

}  // namespace

std::string lsun_missing_packages() {
  std::string m;
#if !defined(PRSR_HAVE_LMDB)
  m = "liblmdb-dev";
#endif
#if !defined(PRSR_HAVE_WEBP)
  m += m.empty() ? "libwebp-dev" : " and libwebp-dev";
#endif
  return m;
}

size_t lsun_valid_count(size_t n) {
  if (n < 2) return 0;
  const size_t v = std::max((n + 99) / 100, std::min<size_t>(1000, n / 10));
  return std::min(v, n - 1);
}

std::vector<size_t> lsun_split_indices(const std::vector<std::string_view>& keys, Split split, long limit) {
  check(split != Split::Test, "lsun_split_indices: the test split is the val LMDB");
  const size_t n = keys.size(), nv = lsun_valid_count(n);
  // Valid = the nv records with the smallest (hash, key): a fixed rule, the same on every
  // machine and every run, and independent of --limit (so no train image of any --limit run
  // is ever a valid image).
  std::vector<uint64_t> hash(n);
  for (size_t i = 0; i < n; ++i) hash[i] = fnv1a64(keys[i]);
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t(0));
  auto less = [&](size_t a, size_t b) { return hash[a] != hash[b] ? hash[a] < hash[b] : keys[a] < keys[b]; };
  std::nth_element(order.begin(), order.begin() + (ptrdiff_t)nv, order.end(), less);
  std::vector<uint8_t> is_valid(n, 0);
  for (size_t i = 0; i < nv; ++i) is_valid[order[i]] = 1;
  std::vector<size_t> out;
  const uint8_t want = split == Split::Valid ? 1 : 0;
  for (size_t i = 0; i < n; ++i)
    if (is_valid[i] == want) {
      out.push_back(i);
      if (split == Split::Train && limit > 0 && out.size() >= (size_t)limit) break;
    }
  return out;
}

Image decode_lsun_value(const uint8_t* data, size_t size, const std::string& name) {
  if (size == 0) throw Error(name + ": empty value");
  if (size >= 12 && std::memcmp(data, "RIFF", 4) == 0 && std::memcmp(data + 8, "WEBP", 4) == 0) {
#if defined(PRSR_HAVE_WEBP)
    return decode_webp(data, size, name);
#else
    throw Error(name + ": WebP, and this build has no libwebp (apt-get install libwebp-dev, rebuild)");
#endif
  }
  const bool png = size >= 8 && std::memcmp(data, "\x89PNG\r\n\x1a\n", 8) == 0;
  const bool jpeg = size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF;
  if (!png && !jpeg) throw Error(name + ": not a WebP, JPEG or PNG image");
  return decode_image(data, size, name);
}

LsunSource lsun_source(const DataOptions& opt, Split split) {
  const std::string missing = lsun_missing_packages();
  if (!missing.empty())
    throw Error("--data lsun: this build has no LSUN support: it was built without " + missing +
                "; install the packages (apt-get install liblmdb-dev libwebp-dev, or run tools/setup) and rebuild");
  const std::string& cat = opt.lsun_category;
  if (cat.empty() || !std::all_of(cat.begin(), cat.end(), [](char c) {
        return std::islower((unsigned char)c) || std::isdigit((unsigned char)c) || c == '_';
      }))
    throw Error("--lsun-category: '" + cat + "' is not a category name (bedroom, church_outdoor, ...)");
  const std::string dir = opt.data_dir.empty() ? std::string("datasets/lsun") : opt.data_dir;
  LsunSource s;
  s.lmdb = dir + "/" + cat + (split == Split::Test ? "_val_lmdb" : "_train_lmdb");
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error(missing_message(dir, cat, "no folder " + dir + "/"));
  if (!fs::is_directory(s.lmdb, ec)) throw Error(missing_message(dir, cat, "no " + s.lmdb + "/"));
  if (!fs::is_regular_file(s.lmdb + "/data.mdb", ec))
    throw Error(missing_message(dir, cat, "no " + s.lmdb + "/data.mdb"));
  s.label = "lsun " + cat + " " + split_name(split);
  s.cache_prefix = "lsun-" + cat;
  if (split == Split::Train && opt.limit > 0) s.cache_prefix += "-first" + std::to_string(opt.limit);
  return s;
}

LsunDecoded lsun_build(const DataOptions& opt, Split split, const LsunSource& src, uint64_t key,
                       const std::string& part_path) {
#if !defined(PRSR_HAVE_LMDB) || !defined(PRSR_HAVE_WEBP)
  (void)opt, (void)split, (void)src, (void)key, (void)part_path;
  throw Error("--data lsun: built without " + lsun_missing_packages());
#else
  Lmdb db(src.lmdb);
  if (db.keys.empty()) throw Error(src.lmdb + "/: the LMDB holds no records");
  std::vector<size_t> idx;
  if (split == Split::Test) {
    idx.resize(db.keys.size());
    std::iota(idx.begin(), idx.end(), size_t(0));
  } else {
    idx = lsun_split_indices(db.keys, split, opt.limit);
  }
  const size_t N = idx.size();
  if (N == 0)
    throw Error(src.label + ": no record (the train LMDB has " + std::to_string(db.keys.size()) +
                " records; the valid split needs at least 2)");

  LsunDecoded out;
  out.hr.reserve(N * kPixels);
  std::vector<std::string> bad;  // "key: reason" of the first skipped records
  auto note_bad = [&](size_t i, const std::string& why) {
    if (bad.size() < 10)
      bad.push_back(!why.empty() ? why
                                 : "record " + key_text(db.keys[idx[i]]) +
                                       ": undecodable (found by the interrupted build this one resumes)");
    ++out.skipped;
  };
  PartFile part;
  size_t done = part.open(part_path, key, N, [&](bool ok, const uint8_t* px) {
    if (ok) out.hr.insert(out.hr.end(), px, px + kPixels), ++out.n;
    else note_bad((size_t)(out.n + out.skipped), "");
  });
  out.resumed = (int)done;
  if (done > 0 && done < N)
    std::fprintf(stderr, "%s: resuming an interrupted cache build at record %zu of %zu\n", src.label.c_str(), done, N);

  Progress bar;
  bar.on = opt.progress && N >= 100;
  bar.label = "decoding " + src.label;
  bar.total = (int)N;
  bar.first = (int)done;
  // Chunks of up to 4096 records (12.6 MB): the unit of parallel decoding and of resumption.
  const size_t kChunk = 4096;
  std::vector<uint8_t> body;
  std::vector<std::string> errors;
  while (done < N) {
    if (opt.debug_stop_after > 0 && done >= (size_t)opt.debug_stop_after)
      throw Error(src.label + ": cache build stopped after " + std::to_string(done) + " records (test hook)");
    size_t count = std::min(kChunk, N - done);
    if (opt.debug_stop_after > 0) count = std::min(count, (size_t)opt.debug_stop_after - done);
    body.assign(count * kRecord, 0);
    errors.assign(count, std::string());
    std::atomic<int> progressed{(int)done};
#pragma omp parallel for schedule(dynamic, 8)
    for (long j = 0; j < (long)count; ++j) {
      const size_t r = idx[done + (size_t)j];
      const std::string name = "record " + key_text(db.keys[r]);
      try {
        const Image y = folder_preprocess(decode_lsun_value(db.values[r].first, db.values[r].second, name));
        if (y.w != 32 || y.h != 32 || y.c != 3) throw Error(name + ": preprocessing gave the wrong shape");
        body[(size_t)j * kRecord] = 1;
        std::memcpy(&body[(size_t)j * kRecord + 1], y.px.data(), kPixels);
      } catch (const std::exception& e) {
        std::string msg = e.what();
        if (msg.find(name) == std::string::npos) msg = name + ": " + msg;
        errors[(size_t)j] = msg;
      }
      const int d = ++progressed;
#ifdef _OPENMP
      if (omp_get_thread_num() == 0) bar.update(d);
#else
      bar.update(d);
#endif
    }
    part.append((uint32_t)done, (uint32_t)count, body);
    for (size_t j = 0; j < count; ++j) {
      if (body[j * kRecord])
        out.hr.insert(out.hr.end(), &body[j * kRecord + 1], &body[j * kRecord + 1] + kPixels), ++out.n;
      else note_bad(done + j, errors[j]);
    }
    done += count;
  }
  bar.update((int)N, true);
  for (const std::string& b : bad) std::fprintf(stderr, "warning: skipping %s: %s\n", src.label.c_str(), b.c_str());
  if (out.skipped > (int)bad.size()) std::fprintf(stderr, "warning: ... and %d more\n", out.skipped - (int)bad.size());
  if (out.skipped > 0)
    std::fprintf(stderr, "%s: skipped %d undecodable record%s, kept %d\n", src.label.c_str(), out.skipped,
                 out.skipped == 1 ? "" : "s", out.n);
  return out;
#endif
}

}  // namespace prsr::data
