// Tests for --data lsun (data/lsun.h, docs/data.md "LSUN"): a small LMDB release in the official
// layout is written here with liblmdb, its values encoded here with libwebp (and libjpeg), and
// the expected 32x32 / 8x8 pixels are computed here independently (2-D integer area resize,
// not data/preprocess.cpp). Skipped, visibly, in a build without liblmdb / libwebp.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/lsun.h"
#include "data/preprocess.h"
#include "engine/error.h"

#if defined(PRSR_HAVE_LMDB) && defined(PRSR_HAVE_WEBP)
#include <jpeglib.h>
#include <lmdb.h>
#include <webp/decode.h>
#include <webp/encode.h>
#define PRSR_TEST_LSUN 1
#endif

using namespace prsr::data;
namespace fs = std::filesystem;

namespace {

// The standard FNV-1a 64 (written again here: the split rule is checked against it).
uint64_t fnv(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// 40 lowercase hex digits, like the release's image ids.
std::string hex_key(int i) {
  char b[48];
  std::snprintf(b, sizeof b, "%016llx%016llx%08x", (unsigned long long)fnv("img" + std::to_string(i)),
                (unsigned long long)fnv("x" + std::to_string(i)), (unsigned)(i * 2654435761u));
  return b;
}

struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path =
        fs::temp_directory_path() / ("prsr-test-lsun-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(path, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec))
      fs::permissions(it->path(), fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& rel) const { return (path / rel).string(); }
};

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), (std::streamsize)b.size());
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const prsr::Error& e) { return e.what(); }
  return "<no error>";
}

// An RGB picture with structure at every scale, different per seed.
Image picture(int w, int h, int seed) {
  Image im;
  im.w = w, im.h = h, im.c = 3;
  im.px.resize((size_t)w * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &im.px[((size_t)y * w + x) * 3];
      p[0] = (uint8_t)((x * 7 + y * 3 + seed * 31) % 256);
      p[1] = (uint8_t)((x * y + seed * 11) % 251);
      p[2] = (uint8_t)(((x / 3) ^ (y / 2)) * 13 + seed);
    }
  return im;
}

// Expected target, computed independently: centre square crop, then each output pixel as the
// 2-D exact overlap-weighted mean of the crop, rounded half up.
std::vector<uint8_t> expected32(const Image& im) {
  const int s = std::min(im.w, im.h), x0 = (im.w - s) / 2, y0 = (im.h - s) / 2;
  std::vector<uint8_t> out(32 * 32 * 3);
  for (int oy = 0; oy < 32; ++oy)
    for (int ox = 0; ox < 32; ++ox)
      for (int c = 0; c < 3; ++c) {
        // Coordinates scaled by 32: crop pixel i spans [32 i, 32 i + 32), output o spans [s o, s o + s).
        int64_t sum = 0, area = 0;
        for (int y = 0; y < s; ++y)
          for (int x = 0; x < s; ++x) {
            const int64_t ax =
                std::max<int64_t>(0, std::min<int64_t>((ox + 1) * s, (x + 1) * 32) - std::max<int64_t>(ox * s, x * 32));
            const int64_t ay =
                std::max<int64_t>(0, std::min<int64_t>((oy + 1) * s, (y + 1) * 32) - std::max<int64_t>(oy * s, y * 32));
            const int v =
                im.c == 3 ? im.px[((size_t)(y0 + y) * im.w + x0 + x) * 3 + c] : im.px[(size_t)(y0 + y) * im.w + x0 + x];
            sum += ax * ay * v;
            area += ax * ay;
          }
        out[((size_t)oy * 32 + ox) * 3 + c] = (uint8_t)((2 * sum + area) / (2 * area));
      }
  return out;
}

// Expected 8x8 input: each value the mean of its 4x4 block rounded half up.
std::vector<uint8_t> expected8(const std::vector<uint8_t>& y) {
  std::vector<uint8_t> x(8 * 8 * 3);
  for (int by = 0; by < 8; ++by)
    for (int bx = 0; bx < 8; ++bx)
      for (int c = 0; c < 3; ++c) {
        int s = 0;
        for (int dy = 0; dy < 4; ++dy)
          for (int dx = 0; dx < 4; ++dx) s += y[((size_t)(by * 4 + dy) * 32 + bx * 4 + dx) * 3 + c];
        x[((size_t)by * 8 + bx) * 3 + c] = (uint8_t)((s + 8) / 16);
      }
  return x;
}

#ifdef PRSR_TEST_LSUN

std::vector<uint8_t> webp_lossless(const Image& im) {
  uint8_t* out = nullptr;
  const size_t n = WebPEncodeLosslessRGB(im.px.data(), im.w, im.h, im.w * 3, &out);
  REQUIRE(n > 0);
  std::vector<uint8_t> v(out, out + n);
  WebPFree(out);
  return v;
}

std::vector<uint8_t> webp_lossy(const Image& im, float q) {
  uint8_t* out = nullptr;
  const size_t n = WebPEncodeRGB(im.px.data(), im.w, im.h, im.w * 3, q, &out);
  REQUIRE(n > 0);
  std::vector<uint8_t> v(out, out + n);
  WebPFree(out);
  return v;
}

// A grey JPEG in memory (libjpeg), and its decoding by libjpeg (the expected grey values).
std::vector<uint8_t> jpeg_grey(const std::vector<uint8_t>& g, int w, int h) {
  jpeg_compress_struct c;
  jpeg_error_mgr e;
  c.err = jpeg_std_error(&e);
  jpeg_create_compress(&c);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &buf, &size);
  c.image_width = w, c.image_height = h, c.input_components = 1, c.in_color_space = JCS_GRAYSCALE;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 90, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(g.data() + (size_t)c.next_scanline * w);
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  std::vector<uint8_t> v(buf, buf + size);
  std::free(buf);
  return v;
}

Image jpeg_decode_grey(const std::vector<uint8_t>& bytes) {
  jpeg_decompress_struct d;
  jpeg_error_mgr e;
  d.err = jpeg_std_error(&e);
  jpeg_create_decompress(&d);
  jpeg_mem_src(&d, bytes.data(), (unsigned long)bytes.size());
  jpeg_read_header(&d, TRUE);
  d.out_color_space = JCS_GRAYSCALE;
  jpeg_start_decompress(&d);
  Image im;
  im.w = (int)d.output_width, im.h = (int)d.output_height, im.c = 1;
  im.px.resize((size_t)im.w * im.h);
  while (d.output_scanline < d.output_height) {
    JSAMPROW row = im.px.data() + (size_t)d.output_scanline * im.w;
    jpeg_read_scanlines(&d, &row, 1);
  }
  jpeg_finish_decompress(&d);
  jpeg_destroy_decompress(&d);
  return im;
}

// An LMDB environment at `dir` (data.mdb + lock.mdb, as the release) holding `records`.
void write_lmdb(const std::string& dir, const std::map<std::string, std::vector<uint8_t>>& records) {
  fs::create_directories(dir);
  MDB_env* env = nullptr;
  REQUIRE(mdb_env_create(&env) == 0);
  REQUIRE(mdb_env_set_mapsize(env, size_t(64) << 20) == 0);
  REQUIRE(mdb_env_open(env, dir.c_str(), 0, 0644) == 0);
  MDB_txn* txn = nullptr;
  REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
  MDB_dbi dbi;
  REQUIRE(mdb_dbi_open(txn, nullptr, 0, &dbi) == 0);
  for (const auto& [k, v] : records) {
    MDB_val key{k.size(), const_cast<char*>(k.data())};
    MDB_val val{v.size(), const_cast<uint8_t*>(v.data())};
    REQUIRE(mdb_put(txn, dbi, &key, &val, 0) == 0);
  }
  REQUIRE(mdb_txn_commit(txn) == 0);
  mdb_env_close(env);
}

// A release in `root`: 40 train records (36 lossless WebPs of several sizes and aspect ratios,
// one lossy WebP, one grey JPEG, one truncated WebP, one non-image, one zero-length value) and
// 5 val records. expect[key] = the expected 32x32 target of every good record.
struct Release {
  std::string root;
  std::map<std::string, std::vector<uint8_t>> train, val;
  std::map<std::string, std::vector<uint8_t>> expect;
  std::set<std::string> bad;
  std::vector<std::string> train_keys;  // sorted, as LMDB orders them

  explicit Release(const std::string& r) : root(r) {
    const int sizes[][2] = {{48, 40}, {40, 64}, {33, 33}, {100, 37}, {32, 32}, {17, 50}, {64, 64}, {45, 31}};
    for (int i = 0; i < 40; ++i) {
      const std::string k = hex_key(i);
      const int w = sizes[i % 8][0], h = sizes[i % 8][1];
      if (i == 5) {  // lossy WebP: expected from libwebp's own decoding
        const std::vector<uint8_t> b = webp_lossy(picture(w, h, i), 80);
        int dw = 0, dh = 0;
        uint8_t* px = WebPDecodeRGB(b.data(), b.size(), &dw, &dh);
        REQUIRE(px != nullptr);
        Image d;
        d.w = dw, d.h = dh, d.c = 3;
        d.px.assign(px, px + (size_t)dw * dh * 3);
        WebPFree(px);
        train[k] = b, expect[k] = expected32(d);
      } else if (i == 11) {  // grey JPEG: replicated to RGB
        Image g;
        g.w = 50, g.h = 41, g.c = 1;
        for (int p = 0; p < 50 * 41; ++p) g.px.push_back((uint8_t)(p * 3 % 256));
        train[k] = jpeg_grey(g.px, g.w, g.h);
        expect[k] = expected32(jpeg_decode_grey(train[k]));
      } else if (i == 17) {  // truncated WebP
        std::vector<uint8_t> b = webp_lossless(picture(w, h, i));
        b.resize(b.size() / 2);
        train[k] = b, bad.insert(k);
      } else if (i == 23) {
        const std::string t = "not an image, just some text";
        train[k] = std::vector<uint8_t>(t.begin(), t.end()), bad.insert(k);
      } else if (i == 29) {
        train[k] = {}, bad.insert(k);
      } else {
        const Image im = picture(w, h, i);
        train[k] = webp_lossless(im), expect[k] = expected32(im);
      }
    }
    for (int i = 100; i < 105; ++i) {
      const Image im = picture(36 + i % 3 * 10, 40, i);
      val[hex_key(i)] = webp_lossless(im), expect[hex_key(i)] = expected32(im);
    }
    write_lmdb(root + "/bedroom_train_lmdb", train);
    write_lmdb(root + "/bedroom_val_lmdb", val);
    for (const auto& kv : train) train_keys.push_back(kv.first);
  }

  // The valid keys by the documented rule: the 4 (= max(ceil(40/100), min(1000, 40/10))) with
  // the smallest (FNV-1a-64(key), key).
  std::set<std::string> valid_keys() const {
    std::vector<std::pair<uint64_t, std::string>> h;
    for (const std::string& k : train_keys) h.push_back({fnv(k), k});
    std::sort(h.begin(), h.end());
    std::set<std::string> v;
    for (int i = 0; i < 4; ++i) v.insert(h[(size_t)i].second);
    return v;
  }
};

DataOptions lsun_options(const std::string& root, const std::string& cache) {
  DataOptions o;
  o.spec = "lsun";
  o.data_dir = root;
  o.cache_dir = cache;
  o.progress = false;
  return o;
}

// The images of `ds` must be exactly the expected targets of `keys` (in order), and their 8x8
// inputs the expected box averages.
void check_images(const Dataset& ds, const std::vector<std::string>& keys, const Release& rel) {
  REQUIRE(ds.n == (int)keys.size());
  CHECK(ds.colors == 3);
  for (int i = 0; i < ds.n; ++i) {
    const std::vector<uint8_t>& want = rel.expect.at(keys[(size_t)i]);
    INFO("image " << i << " key " << keys[(size_t)i]);
    CHECK(std::equal(want.begin(), want.end(), ds.image(i)));
    std::vector<uint8_t> x(8 * 8 * 3);
    box_downsample4(ds.image(i), 32, 3, x.data());
    CHECK(x == expected8(want));
  }
}

std::vector<std::string> cache_files(const std::string& dir) {
  std::vector<std::string> f;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec)) f.push_back(e.path().filename().string());
  std::sort(f.begin(), f.end());
  return f;
}

#endif  // PRSR_TEST_LSUN

}  // namespace

TEST_CASE("lsun: split rule: valid count, disjoint, complete, stable, --limit") {
  CHECK(lsun_valid_count(0) == 0);
  CHECK(lsun_valid_count(1) == 0);
  CHECK(lsun_valid_count(2) == 1);
  CHECK(lsun_valid_count(30) == 3);
  CHECK(lsun_valid_count(5000) == 500);
  CHECK(lsun_valid_count(20000) == 1000);
  CHECK(lsun_valid_count(100000) == 1000);
  CHECK(lsun_valid_count(3033042) == 30331);
  std::vector<std::string> keys;
  for (int i = 0; i < 25000; ++i) keys.push_back(hex_key(i));
  std::sort(keys.begin(), keys.end());
  const std::vector<std::string_view> views(keys.begin(), keys.end());
  const std::vector<size_t> tr = lsun_split_indices(views, Split::Train, 0);
  const std::vector<size_t> va = lsun_split_indices(views, Split::Valid, 0);
  CHECK(va.size() == 1000);
  CHECK(tr.size() == 24000);
  CHECK(std::is_sorted(tr.begin(), tr.end()));
  CHECK(std::is_sorted(va.begin(), va.end()));
  std::vector<size_t> all(tr);
  all.insert(all.end(), va.begin(), va.end());
  std::sort(all.begin(), all.end());
  CHECK(std::adjacent_find(all.begin(), all.end()) == all.end());  // disjoint
  CHECK(all.size() == keys.size());                                // complete
  // Valid = the 1000 smallest (FNV-1a-64, key), computed here with the standard FNV-1a.
  std::vector<std::pair<uint64_t, size_t>> h;
  for (size_t i = 0; i < keys.size(); ++i) h.push_back({fnv(keys[i]), i});
  std::sort(h.begin(), h.end());
  std::vector<size_t> want;
  for (size_t i = 0; i < 1000; ++i) want.push_back(h[i].second);
  std::sort(want.begin(), want.end());
  CHECK(va == want);
  // Stable: the same answer again; --limit takes a prefix of train and leaves valid alone.
  CHECK(lsun_split_indices(views, Split::Valid, 0) == va);
  const std::vector<size_t> lim = lsun_split_indices(views, Split::Train, 100);
  CHECK(lim == std::vector<size_t>(tr.begin(), tr.begin() + 100));
  CHECK(lsun_split_indices(views, Split::Valid, 100) == va);
  CHECK(lsun_split_indices(views, Split::Train, 1000000) == tr);
}

TEST_CASE("lsun: missing release or category says what is missing and where to download it") {
  DataOptions o;
  o.spec = "lsun";
  o.data_dir = "/nonexistent/lsun";
  o.cache_dir = "/nonexistent/cache";
  CHECK(dataset_colors("lsun") == 3);
  const std::string e = error_of([&] { load_dataset(o, Split::Train); });
  if (!lsun_missing_packages().empty()) {
    CHECK(e.find(lsun_missing_packages()) != std::string::npos);
    return;
  }
  CHECK(e.find("/nonexistent/lsun") != std::string::npos);
  CHECK(e.find("bedroom_train_lmdb") != std::string::npos);
  CHECK(e.find("http://dl.yf.io/lsun/scenes/") != std::string::npos);
  CHECK(e.find("--data-dir") != std::string::npos);
  TempDir dir;
  fs::create_directories(dir / "lsun/bedroom_train_lmdb");  // a folder without data.mdb
  o.data_dir = dir / "lsun";
  CHECK(error_of([&] { load_dataset(o, Split::Train); }).find("bedroom_train_lmdb/data.mdb") != std::string::npos);
  CHECK(error_of([&] { load_dataset(o, Split::Test); }).find("no " + (dir / "lsun/bedroom_val_lmdb") + "/") !=
        std::string::npos);
  o.lsun_category = "church_outdoor";
  CHECK(error_of([&] { load_dataset(o, Split::Train); }).find("church_outdoor_train_lmdb") != std::string::npos);
  o.lsun_category = "../etc";
  CHECK(error_of([&] { load_dataset(o, Split::Train); }).find("not a category name") != std::string::npos);
}

#ifdef PRSR_TEST_LSUN

TEST_CASE("lsun: value decoding: WebP, JPEG, PNG; empty, non-image and truncated values are errors") {
  const Image im = picture(20, 12, 3);
  const std::vector<uint8_t> w = webp_lossless(im);
  const Image d = decode_lsun_value(w.data(), w.size(), "record k");
  CHECK(d.w == 20);
  CHECK(d.h == 12);
  CHECK(d.c == 3);
  CHECK(d.px == im.px);
  std::vector<uint8_t> cut(w.begin(), w.begin() + (ptrdiff_t)w.size() / 2);
  CHECK(error_of([&] { decode_lsun_value(cut.data(), cut.size(), "record k"); }).find("record k: corrupt WebP") == 0);
  const std::string t = "hello";
  CHECK(error_of([&] { decode_lsun_value((const uint8_t*)t.data(), t.size(), "record k"); }) ==
        "record k: not a WebP, JPEG or PNG image");
  CHECK(error_of([&] { decode_lsun_value(nullptr, 0, "record k"); }) == "record k: empty value");
}

TEST_CASE("lsun: a generated release: exact pixels, bad records counted, splits, cache") {
  TempDir dir;
  Release rel(dir / "lsun");
  DataOptions o = lsun_options(rel.root, dir / "cache");
  Dataset tr = load_dataset(o, Split::Train), va = load_dataset(o, Split::Valid), te = load_dataset(o, Split::Test);
  CHECK(tr.name == "lsun");
  CHECK_FALSE(tr.from_cache);
  const std::set<std::string> vkeys = rel.valid_keys();
  std::vector<std::string> want_tr, want_va, want_te;
  int bad_tr = 0, bad_va = 0;
  for (const std::string& k : rel.train_keys) {
    const bool v = vkeys.count(k) > 0;
    if (rel.bad.count(k)) ++(v ? bad_va : bad_tr);
    else (v ? want_va : want_tr).push_back(k);
  }
  for (const auto& kv : rel.val) want_te.push_back(kv.first);
  CHECK(tr.skipped == bad_tr);
  CHECK(va.skipped == bad_va);
  CHECK(tr.skipped + va.skipped == 3);
  CHECK(te.skipped == 0);
  check_images(tr, want_tr, rel);
  check_images(va, want_va, rel);
  check_images(te, want_te, rel);
  CHECK(tr.n + va.n == 37);
  CHECK(te.n == 5);
  // From the cache: the same images, the skip counts kept; no partial file is left.
  Dataset tr2 = load_dataset(o, Split::Train);
  CHECK(tr2.from_cache);
  CHECK(tr2.hr == tr.hr);
  CHECK(tr2.skipped == tr.skipped);
  for (const std::string& f : cache_files(dir / "cache")) CHECK(f.find(".part") == std::string::npos);

  // --limit 10: the first 10 train records (bad ones among them skipped); valid unchanged;
  // its own cache file (the full train cache stays).
  o.limit = 10;
  Dataset lim = load_dataset(o, Split::Train);
  int bad_in_first10 = 0;
  std::vector<std::string> want_lim;
  for (const std::string& k : rel.train_keys) {
    if (vkeys.count(k)) continue;
    if ((int)want_lim.size() + bad_in_first10 == 10) break;
    if (rel.bad.count(k)) ++bad_in_first10;
    else want_lim.push_back(k);
  }
  CHECK(lim.skipped == bad_in_first10);
  check_images(lim, want_lim, rel);
  CHECK(lim.cache_path != tr.cache_path);
  CHECK(fs::exists(tr.cache_path));
  CHECK(load_dataset(o, Split::Valid).hr == va.hr);
}

TEST_CASE("lsun: an interrupted cache build resumes to the same cache bytes") {
  TempDir dir;
  Release rel(dir / "lsun");
  DataOptions full = lsun_options(rel.root, dir / "cache_a");
  const Dataset a = load_dataset(full, Split::Train);
  const std::vector<uint8_t> bytes_a = read_bytes(a.cache_path);

  DataOptions o = lsun_options(rel.root, dir / "cache_b");
  o.debug_stop_after = 7;
  CHECK(error_of([&] { load_dataset(o, Split::Train); }).find("stopped after 7 records") != std::string::npos);
  // Only the partial file: nothing that looks like a cache.
  std::vector<std::string> files = cache_files(dir / "cache_b");
  REQUIRE(files.size() == 1);
  CHECK(files[0].size() > 8);
  CHECK(files[0].compare(files[0].size() - 8, 8, ".u8.part") == 0);
  const std::string part = dir / ("cache_b/" + files[0]);
  const uintmax_t size7 = fs::file_size(part);
  o.debug_stop_after = 20;  // resumes at 7, stops at 20
  CHECK(error_of([&] { load_dataset(o, Split::Train); }).find("stopped after 20 records") != std::string::npos);
  CHECK(fs::file_size(part) == size7 + 16 + 13 * 3073);
  // A damaged last chunk (one flipped byte) is dropped: the next build resumes at 7.
  {
    std::vector<uint8_t> b = read_bytes(part);
    b[b.size() - 100] ^= 0x40;
    write_bytes(part, b);
  }
  o.debug_stop_after = 0;
  const Dataset b = load_dataset(o, Split::Train);
  CHECK(b.resumed == 7);
  CHECK(read_bytes(b.cache_path) == bytes_a);
  CHECK(cache_files(dir / "cache_b") == std::vector<std::string>{fs::path(b.cache_path).filename().string()});

  // Interrupted again (fresh cache folder), plus a torn tail (half a chunk header): resumes at 20.
  DataOptions c = lsun_options(rel.root, dir / "cache_c");
  c.debug_stop_after = 20;
  CHECK_THROWS_AS(load_dataset(c, Split::Train), prsr::Error);
  const std::string part_c = dir / ("cache_c/" + cache_files(dir / "cache_c")[0]);
  {
    std::ofstream out(part_c, std::ios::binary | std::ios::app);
    out.write("\x07\x00\x00\x00\x05", 5);
  }
  c.debug_stop_after = 0;
  const Dataset d = load_dataset(c, Split::Train);
  CHECK(d.resumed == 20);
  CHECK(d.skipped == a.skipped);
  CHECK(read_bytes(d.cache_path) == bytes_a);
  // A partial file of another key (the release changed) is not used: the build starts over.
  DataOptions e = lsun_options(rel.root, dir / "cache_e");
  e.debug_stop_after = 5;
  CHECK_THROWS_AS(load_dataset(e, Split::Train), prsr::Error);
  fs::last_write_time(rel.root + "/bedroom_train_lmdb/data.mdb",
                      fs::last_write_time(rel.root + "/bedroom_train_lmdb/data.mdb") + std::chrono::seconds(3));
  const std::string old_part = dir / ("cache_e/" + cache_files(dir / "cache_e")[0]);
  e.debug_stop_after = 0;
  const Dataset f = load_dataset(e, Split::Train);
  CHECK(f.resumed == 0);
  CHECK(f.hr == a.hr);
  CHECK_FALSE(fs::exists(old_part));  // the stale partial file is removed with the stale caches
}

TEST_CASE("lsun: a read-only release folder is read without writing anything there") {
  TempDir dir;
  Release rel(dir / "lsun");
  // Everything read-only; remember every file's bytes and mtime.
  std::map<std::string, std::pair<std::vector<uint8_t>, fs::file_time_type>> before;
  for (auto& e : fs::recursive_directory_iterator(rel.root))
    if (e.is_regular_file()) before[e.path().string()] = {read_bytes(e.path().string()), e.last_write_time()};
  CHECK(before.count(rel.root + "/bedroom_train_lmdb/lock.mdb") == 1);  // the release's layout
  // lock.mdb is never opened: a copy without it reads the same.
  fs::remove(rel.root + "/bedroom_val_lmdb/lock.mdb");
  before.erase(rel.root + "/bedroom_val_lmdb/lock.mdb");
  for (auto& e : fs::recursive_directory_iterator(rel.root))
    fs::permissions(e.path(), e.is_directory() ? fs::perms(0555) : fs::perms(0444));
  fs::permissions(rel.root, fs::perms(0555));
  DataOptions o = lsun_options(rel.root, dir / "cache");
  CHECK(load_dataset(o, Split::Test).n == 5);
  CHECK(load_dataset(o, Split::Valid).n > 0);
  std::map<std::string, std::pair<std::vector<uint8_t>, fs::file_time_type>> after;
  for (auto& e : fs::recursive_directory_iterator(rel.root))
    if (e.is_regular_file()) after[e.path().string()] = {read_bytes(e.path().string()), e.last_write_time()};
  CHECK(after == before);  // no lock file written, no file added
  if (::geteuid() == 0) MESSAGE("running as root: the permissions are not enforced; checked that nothing changed");
}

TEST_CASE("lsun: cli train and sample on a generated release; a missing one is one error line") {
  TempDir dir;
  Release rel(dir / "lsun");
  const std::string bin = PRSR_TRAIN_BIN;
  auto run = [&](const std::string& cmd, const std::string& tag) {
    const int st = std::system((cmd + " >" + (dir / (tag + ".out")) + " 2>" + (dir / (tag + ".err"))).c_str());
    REQUIRE(st != -1);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  };
  auto text = [&](const std::string& f) {
    const std::vector<uint8_t> b = read_bytes(dir / f);
    return std::string(b.begin(), b.end());
  };
  const std::string tiny =
      " --channels 4 --layers 1 --head 16 --cond-channels 4 --cond-blocks 1 --batch 4 --threads 1"
      " --eval-every 0 --sample-every 0 --print-every 1 --valid-count 2 --steps 2";
  CHECK(run(bin + " --data lsun --data-dir " + (dir / "nope") + " --out " + (dir / "o"), "missing") == 1);
  const std::string err = text("missing.err");
  CHECK(err.rfind("error: ", 0) == 0);
  CHECK(std::count(err.begin(), err.end(), '\n') == 1);
  CHECK(err.find(dir / "nope") != std::string::npos);
  CHECK(err.find("download") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "o"));

  CHECK(run(bin + " --data lsun --data-dir " + rel.root + " --limit 12 --cache-dir " + (dir / "cache") + " --out " +
                (dir / "run") + tiny,
            "train") == 0);
  INFO(text("train.err"));
  CHECK(text("train.out").find("lsun") != std::string::npos);
  CHECK(fs::exists(dir / "run/model.bin"));
  CHECK(run(std::string(PRSR_SAMPLE_BIN) + " --ckpt " + (dir / "run/model.bin") + " --data lsun --data-dir " +
                rel.root + " --cache-dir " + (dir / "cache") + " --count 2 --samples-per-input 1 --out " +
                (dir / "s.png") + " --out-dir " + (dir / "s"),
            "sample") == 0);
  INFO(text("sample.err"));
  CHECK(fs::exists(dir / "s.png"));
}

#else

TEST_CASE("lsun: generated-release tests") {
  MESSAGE("skipped: built without " << lsun_missing_packages() << " (apt-get install liblmdb-dev libwebp-dev)");
}

#endif
