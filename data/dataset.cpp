// Data set loading: source discovery (CelebA layout, Fashion-MNIST IDX files, a folder), the
// cache key, parallel decoding with a progress bar and a report of skipped files, and the
// packed cache file. The format and the rules are described in docs/data.md.
#include "data/dataset.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "data/image.h"
#include "data/lsun.h"
#include "data/preprocess.h"
#include "data/progress.h"
#include "engine/error.h"

namespace fs = std::filesystem;

namespace prsr::data {

Split parse_split(const std::string& s) {
  if (s == "train") return Split::Train;
  if (s == "valid") return Split::Valid;
  if (s == "test") return Split::Test;
  throw Error("unknown split '" + s + "' (expected train, valid or test)");
}

const char* split_name(Split s) {
  switch (s) {
    case Split::Train: return "train";
    case Split::Valid: return "valid";
    case Split::Test: return "test";
  }
  return "?";
}

const uint8_t* Dataset::image(int i) const {
  if (i < 0 || i >= n)
    throw Error(name + ": image index " + std::to_string(i) + " out of range [0, " + std::to_string(n) + ")");
  return hr.data() + (size_t)i * image_bytes();
}

namespace {

enum class Kind { CelebA, FashionMnist, Lsun, Folder };

Kind parse_kind(const std::string& spec) {
  if (spec == "celeba") return Kind::CelebA;
  if (spec == "fashion-mnist") return Kind::FashionMnist;
  if (spec == "lsun") return Kind::Lsun;
  if (spec.rfind("folder:", 0) == 0) return Kind::Folder;
  throw Error("unknown data set '" + spec + "' (expected celeba, fashion-mnist, lsun or folder:PATH)");
}

// ---------------------------------------------------------------------------------------------
// Hashing: FNV-1a 64 for keys and paths; a word-wise FNV-1a variant as the cache checksum.
// ---------------------------------------------------------------------------------------------

constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ull, kFnvPrime = 0x100000001b3ull;

struct Hasher {
  uint64_t h = kFnvOffset;
  void bytes(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * kFnvPrime;
  }
  void str(const std::string& s) {
    uint64_t len = s.size();
    bytes(&len, sizeof len);
    bytes(s.data(), s.size());
  }
  void i64(int64_t v) { bytes(&v, sizeof v); }
};

uint64_t fnv1a(const std::string& s) {
  Hasher h;
  h.bytes(s.data(), s.size());
  return h.h;
}

// FNV-1a over 64-bit little-endian words, then the tail bytes: ~8x faster than byte-wise.
uint64_t checksum(const uint8_t* p, size_t n) {
  uint64_t h = kFnvOffset;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * kFnvPrime;
  }
  for (; i < n; ++i) h = (h ^ p[i]) * kFnvPrime;
  return h;
}

std::string hex(uint64_t v, int digits) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)v);
  return std::string(buf + 16 - digits);
}

// Size and mtime (ns) of a file; size -1 when it cannot be stat'ed (it will be reported when
// its decoding fails).
void hash_file_stat(Hasher& h, const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    h.i64(-1);
    return;
  }
  h.i64((int64_t)st.st_size);
  h.i64((int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
}

// ---------------------------------------------------------------------------------------------
// Decoding a list of image files with a recipe, in parallel, in the order of the list.
// ---------------------------------------------------------------------------------------------

struct Decoded {
  std::vector<uint8_t> hr;
  int n = 0, skipped = 0;
  int resumed = 0;  // images taken from an interrupted build's partial file (LSUN)
};

Decoded decode_files(const std::vector<std::string>& files, int colors, Image (*recipe)(const Image&),
                     const std::string& label, bool progress) {
  const size_t B = (size_t)32 * 32 * colors;
  const int N = (int)files.size();
  Decoded out;
  out.hr.resize((size_t)N * B);
  std::vector<std::string> errors((size_t)N);
  std::vector<uint8_t> ok((size_t)N, 0);
  Progress bar;
  bar.on = progress && N >= 100;
  bar.label = "decoding " + label;
  bar.total = N;
  std::atomic<int> done{0};
#pragma omp parallel for schedule(dynamic, 8)
  for (int i = 0; i < N; ++i) {
    try {
      const Image y = recipe(read_image(files[(size_t)i]));
      if (y.w != 32 || y.h != 32 || (size_t)y.c != (size_t)colors)
        throw Error(files[(size_t)i] + ": preprocessing gave the wrong shape");
      std::memcpy(out.hr.data() + (size_t)i * B, y.px.data(), B);
      ok[(size_t)i] = 1;
    } catch (const std::exception& e) {
      std::string msg = e.what();
      // Preprocessing errors (e.g. a crop that does not fit) do not name the file.
      if (msg.find(files[(size_t)i]) == std::string::npos) msg = files[(size_t)i] + ": " + msg;
      errors[(size_t)i] = msg;
    }
    const int d = ++done;
#ifdef _OPENMP
    if (omp_get_thread_num() == 0) bar.update(d);
#else
    bar.update(d);
#endif
  }
  bar.update(N, true);
  // Compact, keeping the order of the list; report what was skipped.
  int kept = 0;
  for (int i = 0; i < N; ++i) {
    if (!ok[(size_t)i]) {
      if (out.skipped < 10) std::fprintf(stderr, "warning: skipping %s\n", errors[(size_t)i].c_str());
      ++out.skipped;
      continue;
    }
    if (kept != i) std::memmove(out.hr.data() + (size_t)kept * B, out.hr.data() + (size_t)i * B, B);
    ++kept;
  }
  if (out.skipped > 10) std::fprintf(stderr, "warning: ... and %d more\n", out.skipped - 10);
  if (out.skipped > 0)
    std::fprintf(stderr, "%s: skipped %d unreadable file%s, kept %d\n", label.c_str(), out.skipped,
                 out.skipped == 1 ? "" : "s", kept);
  out.n = kept;
  out.hr.resize((size_t)kept * B);
  out.hr.shrink_to_fit();
  return out;
}

// ---------------------------------------------------------------------------------------------
// The cache file: a 48-byte header (host byte order, little-endian on every target we build)
// and the packed pixels.
//    0  char[8] magic "PRSRDATA"
//    8  u32 format version (kCacheFormat)
//   12  u32 n
//   16  u32 colors
//   20  u32 size (32)
//   24  u32 skipped (source files left out when it was built)
//   28  u32 reserved (0)
//   32  u64 key
//   40  u64 checksum of the payload (word-wise FNV-1a, see checksum())
//   48  payload: n * size * size * colors bytes, image after image, HWC
// ---------------------------------------------------------------------------------------------

constexpr uint32_t kCacheFormat = 1;
constexpr char kCacheMagic[8] = {'P', 'R', 'S', 'R', 'D', 'A', 'T', 'A'};

struct CacheHeader {
  char magic[8];
  uint32_t version, n, colors, size, skipped, reserved;
  uint64_t key, sum;
};
static_assert(sizeof(CacheHeader) == 48, "cache header is 48 bytes");

std::atomic<bool> g_cache_warned{false};

void warn_cache_once(const std::string& msg) {
  if (!g_cache_warned.exchange(true)) std::fprintf(stderr, "warning: %s; continuing without a cache\n", msg.c_str());
}

// True when `path` holds a valid cache for `key`; fills ds.hr / n / skipped. A file that is
// there but invalid is reported and false is returned (the caller rebuilds it).
bool read_cache(const std::string& path, uint64_t key, int colors, Dataset& ds) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  struct Close {
    FILE* f;
    ~Close() { std::fclose(f); }
  } guard{f};
  auto bad = [&](const char* why) {
    std::fprintf(stderr, "warning: cache file %s is %s; rebuilding it\n", path.c_str(), why);
    return false;
  };
  CacheHeader h;
  if (std::fread(&h, sizeof h, 1, f) != 1) return bad("truncated");
  if (std::memcmp(h.magic, kCacheMagic, 8) != 0 || h.version != kCacheFormat)
    return bad("not a cache file of this version");
  if (h.key != key || h.colors != (uint32_t)colors || h.size != 32 || h.n == 0)
    return bad("inconsistent (header does not match its name)");
  struct stat st;
  const size_t payload = (size_t)h.n * h.size * h.size * h.colors;
  if (::fstat(fileno(f), &st) != 0 || (uint64_t)st.st_size != sizeof h + payload) return bad("truncated or too long");
  ds.hr.resize(payload);
  if (std::fread(ds.hr.data(), 1, payload, f) != payload) return bad("truncated");
  if (checksum(ds.hr.data(), payload) != h.sum) return bad("corrupt (checksum mismatch)");
  ds.n = (int)h.n;
  ds.skipped = (int)h.skipped;
  return true;
}

// Atomic: temp file in the cache folder, fsync, rename. False (with a warning, once) on failure.
bool write_cache(const std::string& path, uint64_t key, const Dataset& ds) {
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  if (ec) {
    warn_cache_once("cannot create cache folder " + fs::path(path).parent_path().string() + ": " + ec.message());
    return false;
  }
  static std::atomic<unsigned> counter{0};
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1));
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) {
    warn_cache_once("cannot write cache file " + tmp + ": " + std::strerror(errno));
    return false;
  }
  CacheHeader h{};
  std::memcpy(h.magic, kCacheMagic, 8);
  h.version = kCacheFormat;
  h.n = (uint32_t)ds.n;
  h.colors = (uint32_t)ds.colors;
  h.size = (uint32_t)ds.size;
  h.skipped = (uint32_t)ds.skipped;
  h.key = key;
  h.sum = checksum(ds.hr.data(), ds.hr.size());
  bool ok = std::fwrite(&h, sizeof h, 1, f) == 1 && std::fwrite(ds.hr.data(), 1, ds.hr.size(), f) == ds.hr.size() &&
            std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  const int err = errno;
  ok = (std::fclose(f) == 0) && ok;
  if (ok && std::rename(tmp.c_str(), path.c_str()) != 0) ok = false;
  if (!ok) {
    std::remove(tmp.c_str());
    warn_cache_once("cannot write cache file " + path + ": " + std::strerror(err ? err : errno));
  }
  return ok;
}

// Removes older caches of the same data set and split (same "<prefix>-<split>-" name, other key),
// and their partial files ("<cache>.u8.part", left by an interrupted LSUN build).
void remove_stale_caches(const std::string& dir, const std::string& stem, const std::string& keep) {
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const bool u8 = name.size() > 3 && name.compare(name.size() - 3, 3, ".u8") == 0;
    const bool part = name.size() > 8 && name.compare(name.size() - 8, 8, ".u8.part") == 0;
    if (name.rfind(stem, 0) == 0 && (u8 || part) && it->path().string() != keep) {
      std::error_code rm;
      fs::remove(it->path(), rm);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Sources
// ---------------------------------------------------------------------------------------------

// What the loader needs to know about one split before decoding: the key, the cache name and
// how to produce the pixels.
struct Plan {
  std::string name;          // Dataset::name
  std::string cache_prefix;  // cache file "<prefix>-<split>-<key>.u8"
  std::string label;         // for messages: "celeba train"
  int colors = 0;
  uint64_t key = 0;
  bool shared_splits = false;  // Dataset::shared_splits
  // Decodes the split; a resumable build (LSUN) keeps its partial file at cache_path + ".part".
  std::function<Decoded(const std::string& cache_path)> build;
};

std::string celeba_missing_message(const std::string& dir, const std::string& missing) {
  return "CelebA not found: " + missing + " (looked in " + dir +
         "/ for img_align_celeba/ or img_align_celeba_png/ and list_eval_partition.txt); "
         "download \"Align&Cropped Images\" (img_align_celeba.zip) and list_eval_partition.txt "
         "from the CelebA project page https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, unzip "
         "into " +
         dir + "/ or point --data-dir at the folder that holds them";
}

Plan plan_celeba(const DataOptions& opt, Split split) {
  const std::string dir = opt.data_dir.empty() ? std::string("datasets/celeba") : opt.data_dir;
  const std::string part = dir + "/list_eval_partition.txt";
  std::string imgdir = dir + "/img_align_celeba";
  bool png = false;
  std::error_code ec;
  if (!fs::is_directory(imgdir, ec)) {
    if (fs::is_directory(dir + "/img_align_celeba_png", ec)) {
      imgdir = dir + "/img_align_celeba_png";
      png = true;
    } else {
      throw Error(celeba_missing_message(dir, "no image folder " + imgdir + "/"));
    }
  }
  std::ifstream in(part);
  if (!in) throw Error(celeba_missing_message(dir, "cannot read " + part));
  // Lines "000001.jpg 0" (0 train, 1 valid, 2 test). Also tolerated: CRLF, commas, and one
  // header line (the CSV copy "image_id,partition").
  const int want = split == Split::Train ? 0 : split == Split::Valid ? 1 : 2;
  std::vector<std::string> files;
  std::string line;
  int lineno = 0;
  Hasher h;
  h.str("celeba");
  h.i64(kPreprocessVersion);
  h.str(split_name(split));
  h.i64(png);
  hash_file_stat(h, part);
  while (std::getline(in, line)) {
    ++lineno;
    for (char& ch : line)
      if (ch == ',' || ch == '\r' || ch == '\t') ch = ' ';
    const size_t a = line.find_first_not_of(' ');
    if (a == std::string::npos) continue;
    const size_t b = line.find(' ', a);
    const size_t c = b == std::string::npos ? b : line.find_first_not_of(' ', b);
    const std::string fname = line.substr(a, b == std::string::npos ? b : b - a);
    const std::string tag = c == std::string::npos ? "" : line.substr(c, line.find(' ', c) - c);
    if (tag.size() != 1 || tag[0] < '0' || tag[0] > '2') {
      if (lineno == 1) continue;  // header
      throw Error(part + ":" + std::to_string(lineno) + ": expected \"<file> <0|1|2>\", got \"" + line + "\"");
    }
    if (tag[0] - '0' != want) continue;
    std::string path = imgdir + "/" + fname;
    if (png) path = imgdir + "/" + fs::path(fname).stem().string() + ".png";
    files.push_back(path);
  }
  if (files.empty()) throw Error(part + ": no image is listed for the " + split_name(split) + " split");
  for (const std::string& f : files) {
    h.str(fs::path(f).filename().string());
    hash_file_stat(h, f);
  }
  Plan p;
  p.name = "celeba";
  p.cache_prefix = "celeba";
  p.label = std::string("celeba ") + split_name(split);
  p.colors = 3;
  p.key = h.h;
  p.build = [files, label = p.label, progress = opt.progress](const std::string&) {
    return decode_files(files, 3, celeba_preprocess, label, progress);
  };
  return p;
}

// Reads all images of a gzipped (or plain) IDX3 file of 28x28 images.
std::vector<uint8_t> read_idx28(const std::string& path, int* count) {
  gzFile gz = gzopen(path.c_str(), "rb");
  if (!gz) throw Error("cannot read " + path + ": " + std::strerror(errno ? errno : ENOENT));
  struct Close {
    gzFile g;
    ~Close() { gzclose(g); }
  } guard{gz};
  auto read_exact = [&](void* dst, size_t n, const char* what) {
    size_t got = 0;
    while (got < n) {
      const unsigned chunk = (unsigned)std::min<size_t>(n - got, 1u << 30);
      const int r = gzread(gz, static_cast<uint8_t*>(dst) + got, chunk);
      if (r < 0) {
        int zerr = 0;
        const char* m = gzerror(gz, &zerr);
        throw Error(path + ": corrupt gzip data while reading " + what + ": " + (m ? m : "?"));
      }
      if (r == 0) throw Error(path + ": truncated (ended while reading " + what + ")");
      got += (size_t)r;
    }
  };
  uint8_t hdr[16];
  read_exact(hdr, 16, "the IDX header");
  auto be32 = [&](int o) {
    return (uint32_t)hdr[o] << 24 | (uint32_t)hdr[o + 1] << 16 | (uint32_t)hdr[o + 2] << 8 | hdr[o + 3];
  };
  if (be32(0) != 0x00000803)
    throw Error(path + ": not an IDX image file (magic " + hex(be32(0), 8) + ", expected 00000803)");
  const uint32_t n = be32(4), rows = be32(8), cols = be32(12);
  if (rows != 28 || cols != 28)
    throw Error(path + ": images are " + std::to_string(rows) + "x" + std::to_string(cols) + ", expected 28x28");
  if (n == 0 || n > 10000000) throw Error(path + ": implausible image count " + std::to_string(n));
  std::vector<uint8_t> px((size_t)n * 784);
  read_exact(px.data(), px.size(), "the pixels");
  *count = (int)n;
  return px;
}

std::string find_idx(const std::string& dir, const std::string& base) {
  for (const std::string& cand : {dir + "/" + base + ".gz", dir + "/" + base}) {
    std::error_code ec;
    if (fs::is_regular_file(cand, ec)) return cand;
  }
  throw Error("Fashion-MNIST not found: no " + dir + "/" + base +
              ".gz; install it with `apt-get install dataset-fashion-mnist` or point --data-dir "
              "at a folder holding train-images-idx3-ubyte.gz and t10k-images-idx3-ubyte.gz");
}

Plan plan_fmnist(const DataOptions& opt, Split split) {
  const std::string dir = opt.data_dir.empty() ? std::string("/usr/share/datasets/fashion-mnist") : opt.data_dir;
  const std::string file = find_idx(dir, split == Split::Test ? "t10k-images-idx3-ubyte" : "train-images-idx3-ubyte");
  Hasher h;
  h.str("fashion-mnist");
  h.i64(kPreprocessVersion);
  h.str(split_name(split));
  hash_file_stat(h, file);
  Plan p;
  p.name = "fashion-mnist";
  p.cache_prefix = "fashion-mnist";
  p.label = std::string("fashion-mnist ") + split_name(split);
  p.colors = 1;
  p.key = h.h;
  p.build = [file, split](const std::string&) {
    int total = 0;
    const std::vector<uint8_t> px = read_idx28(file, &total);
    // Train / Valid both come from train-images: Valid = the last 5000 when there are more
    // than 10000 images (60000 -> 55000 / 5000), else the last ceil(total / 12).
    int lo = 0, hi = total;
    if (split != Split::Test) {
      const int valid = total > 10000 ? 5000 : (total + 11) / 12;
      if (split == Split::Train) hi = total - valid;
      else lo = total - valid;
    }
    Decoded d;
    d.n = hi - lo;
    d.hr.resize((size_t)d.n * 1024);
    for (int i = lo; i < hi; ++i) pad28_to_32(px.data() + (size_t)i * 784, d.hr.data() + (size_t)(i - lo) * 1024);
    return d;
  };
  return p;
}

bool is_image_name(const fs::path& p) {
  std::string ext = p.extension().string();
  for (char& ch : ext) ch = (char)std::tolower((unsigned char)ch);
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

Plan plan_folder(const DataOptions& opt, Split split) {
  std::string root = opt.spec.substr(7);
  if (root.empty()) root = opt.data_dir;
  if (root.empty()) throw Error("folder data set: no path given (use --data folder:PATH)");
  std::error_code ec;
  if (!fs::is_directory(root, ec))
    throw Error("folder data set: " + root + " is not a directory" + (ec ? " (" + ec.message() + ")" : std::string()));
  std::vector<std::string> rel;
  try {
    rel = list_image_files(root);
  } catch (const Error& e) { throw Error(std::string("folder data set: ") + e.what()); }
  const int total = (int)rel.size();
  if (total == 0) throw Error("folder data set: no .png / .jpg / .jpeg files under " + root);
  Hasher h;
  h.str("folder");
  h.i64(kPreprocessVersion);
  h.str(split_name(split));
  h.i64(total);
  std::vector<std::string> files;
  for (const std::string& r : folder_split_files(rel, split)) {
    files.push_back(root + "/" + r);
    h.str(r);
    hash_file_stat(h, files.back());
  }
  const fs::path abs = fs::weakly_canonical(fs::absolute(root), ec);
  std::string base = abs.filename().string();
  if (base.empty()) base = "root";
  for (char& ch : base)
    if (!std::isalnum((unsigned char)ch) && ch != '-' && ch != '_') ch = '_';
  Plan p;
  p.name = "folder";
  p.cache_prefix = "folder-" + base + "-" + hex(fnv1a(abs.string()), 8);
  p.label = opt.spec + " " + split_name(split);
  p.colors = 3;
  p.key = h.h;
  p.shared_splits = total < kFolderSplitMin;
  p.build = [files, label = p.label, progress = opt.progress](const std::string&) {
    return decode_files(files, 3, folder_preprocess, label, progress);
  };
  return p;
}

// LSUN (data/lsun.h): the key is the LMDB's data.mdb size and mtime, the category, the split and
// the --limit; the train split of a --limit run has its own prefix so it does not evict the
// full one.
Plan plan_lsun(const DataOptions& opt, Split split) {
  const LsunSource src = lsun_source(opt, split);
  Hasher h;
  h.str("lsun");
  h.i64(kPreprocessVersion);
  h.str(opt.lsun_category);
  h.str(split_name(split));
  h.i64(split == Split::Train ? opt.limit : 0);
  hash_file_stat(h, src.lmdb + "/data.mdb");
  Plan p;
  p.name = "lsun";
  p.cache_prefix = src.cache_prefix;
  p.label = src.label;
  p.colors = 3;
  p.key = h.h;
  p.build = [opt, split, src, key = p.key](const std::string& cache_path) {
    LsunDecoded l = lsun_build(opt, split, src, key, cache_path + ".part");
    Decoded d;
    d.hr = std::move(l.hr);
    d.n = l.n;
    d.skipped = l.skipped;
    d.resumed = l.resumed;
    return d;
  };
  return p;
}

}  // namespace

std::vector<std::string> list_image_files(const std::string& root) {
  std::vector<std::string> rel;
  try {
    for (fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied), end; it != end;
         ++it) {
      std::error_code e2;
      if (it->is_regular_file(e2) && is_image_name(it->path()))
        rel.push_back(it->path().lexically_relative(root).generic_string());
    }
  } catch (const fs::filesystem_error& e) { throw Error("cannot list " + root + ": " + e.code().message()); }
  std::sort(rel.begin(), rel.end());
  return rel;
}

std::vector<std::string> folder_split_files(const std::vector<std::string>& relpaths, Split split) {
  const int total = (int)relpaths.size();
  if (total < kFolderSplitMin) return relpaths;
  // (bucket, path) of every file, per split, by FNV-1a(relpath) % 100.
  using Entry = std::pair<int, std::string>;
  std::vector<Entry> parts[3];
  for (const std::string& r : relpaths) {
    const int bucket = int(fnv1a(r) % 100);
    const Split s = bucket < 90 ? Split::Train : bucket < 95 ? Split::Valid : Split::Test;
    parts[(int)s].push_back({bucket, r});
  }
  // A split left empty by the hash (likely for small folders: with 24 images the valid split
  // is empty 29% of the time) takes the highest-(bucket, path) image of the largest split:
  // for valid and test that is the train image nearest to their bucket range. Deterministic;
  // with 20+ images at most two images move, and none when no split is empty.
  for (int want = 0; want < 3; ++want) {
    if (!parts[want].empty()) continue;
    int from = 0;
    for (int k = 1; k < 3; ++k)
      if (parts[k].size() > parts[from].size()) from = k;
    auto it = std::max_element(parts[from].begin(), parts[from].end());
    parts[want].push_back(*it);
    parts[from].erase(it);
  }
  std::vector<std::string> out;
  for (const Entry& e : parts[(int)split]) out.push_back(e.second);
  std::sort(out.begin(), out.end());
  return out;
}

int dataset_colors(const std::string& spec) { return parse_kind(spec) == Kind::FashionMnist ? 1 : 3; }

Dataset load_dataset(const DataOptions& opt, Split split) {
  const Kind kind = parse_kind(opt.spec);
  Plan plan = kind == Kind::CelebA         ? plan_celeba(opt, split)
              : kind == Kind::FashionMnist ? plan_fmnist(opt, split)
              : kind == Kind::Lsun         ? plan_lsun(opt, split)
                                           : plan_folder(opt, split);
  Dataset ds;
  ds.name = plan.name;
  ds.colors = plan.colors;
  ds.size = 32;
  ds.shared_splits = plan.shared_splits;
  const std::string cache_dir = opt.cache_dir.empty() ? std::string("datasets/cache") : opt.cache_dir;
  const std::string stem = plan.cache_prefix + "-" + split_name(split) + "-";
  const std::string cache_path = cache_dir + "/" + stem + hex(plan.key, 16) + ".u8";
  if (read_cache(cache_path, plan.key, plan.colors, ds)) {
    ds.from_cache = true;
    ds.cache_path = cache_path;
    std::remove((cache_path + ".part").c_str());  // left if a run died between rename and remove
    if (ds.skipped > 0)
      std::fprintf(stderr, "%s: %d unreadable file%s skipped when the cache was built\n", plan.label.c_str(),
                   ds.skipped, ds.skipped == 1 ? " was" : "s were");
    return ds;
  }
  Decoded d = plan.build(cache_path);
  if (d.n == 0)
    throw Error(plan.label + ": no usable image (" + std::to_string(d.skipped) + " unreadable files skipped)");
  ds.hr = std::move(d.hr);
  ds.n = d.n;
  ds.skipped = d.skipped;
  ds.resumed = d.resumed;
  if (write_cache(cache_path, plan.key, ds)) {
    ds.cache_path = cache_path;
    std::remove((cache_path + ".part").c_str());  // a resumable build's partial file, done with
    remove_stale_caches(cache_dir, stem, cache_path);
  }
  return ds;
}

}  // namespace prsr::data
