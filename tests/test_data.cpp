// Tests for data/ (docs/data.md): image I/O, the exact preprocessing, the three data sets, the
// handling of corrupt files and the cache. Every data set is made here, in a temp folder.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <jpeglib.h>
#include <png.h>
#include <zlib.h>

#include "data/dataset.h"
#include "data/image.h"
#include "data/preprocess.h"
#include "engine/error.h"

using namespace prsr::data;
namespace fs = std::filesystem;

namespace {

// A fresh folder under the system temp dir, removed with everything in it at the end.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path =
        fs::temp_directory_path() / ("prsr-test-data-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& rel) const { return (path / rel).string(); }
};

// Captures what is written to stderr (fd 2) between construction and text().
struct CaptureStderr {
  std::string file;
  int saved = -1;
  explicit CaptureStderr(const TempDir& dir) : file(dir / "stderr.txt") {
    std::fflush(stderr);
    saved = ::dup(2);
    int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    ::close(fd);
  }
  std::string text() {
    if (saved >= 0) {
      std::fflush(stderr);
      ::dup2(saved, 2);
      ::close(saved);
      saved = -1;
    }
    std::ifstream in(file);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  ~CaptureStderr() { text(); }
};

std::vector<uint8_t> random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = (uint8_t)(rng() & 255);
  return v;
}

Image make_image(int w, int h, int c, unsigned seed) {
  Image img;
  img.w = w;
  img.h = h;
  img.c = c;
  img.px = random_bytes((size_t)w * h * c, seed);
  return img;
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), (std::streamsize)bytes.size());
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// A PNG written with libpng directly (rows already in the file's bit layout). Test inputs are
// valid, so libpng's default error handling (abort) is never reached.
void write_png_raw(const std::string& path, int w, int h, int depth, int color_type, bool interlace,
                   const std::vector<std::vector<uint8_t>>& rows, const std::vector<png_color>& palette = {},
                   const std::vector<uint8_t>& trans = {}) {
  FILE* f = std::fopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  png_init_io(png, f);
  png_set_IHDR(png, info, w, h, depth, color_type, interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (!palette.empty()) png_set_PLTE(png, info, palette.data(), (int)palette.size());
  if (!trans.empty()) png_set_tRNS(png, info, trans.data(), (int)trans.size(), nullptr);
  std::vector<png_bytep> ptrs;
  for (auto& r : rows) ptrs.push_back(const_cast<png_bytep>(r.data()));
  png_set_rows(png, info, ptrs.data());
  png_write_png(png, info, PNG_TRANSFORM_IDENTITY, nullptr);
  png_destroy_write_struct(&png, &info);
  std::fclose(f);
}

// A JPEG written with libjpeg (default 4:2:0 sampling for colour).
void write_jpeg(const std::string& path, int w, int h, int comps, J_COLOR_SPACE cs, const std::vector<uint8_t>& px,
                int quality = 95) {
  FILE* f = std::fopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  jpeg_compress_struct c;
  jpeg_error_mgr e;
  c.err = jpeg_std_error(&e);
  jpeg_create_compress(&c);
  jpeg_stdio_dest(&c, f);
  c.image_width = w;
  c.image_height = h;
  c.input_components = comps;
  c.in_color_space = cs;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, quality, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(px.data() + (size_t)c.next_scanline * w * comps);
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  std::fclose(f);
}

// A smooth RGB test picture (JPEG friendly), different per seed.
std::vector<uint8_t> smooth_rgb(int w, int h, int seed) {
  std::vector<uint8_t> px((size_t)w * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &px[((size_t)y * w + x) * 3];
      p[0] = (uint8_t)((x + 13 * seed) % 256);
      p[1] = (uint8_t)((y + 29 * seed) % 256);
      p[2] = (uint8_t)((x + y + 50 * seed) / 2 % 256);
    }
  return px;
}

// IDX3 file of 28x28 images, gzipped; `claimed` overrides the count written in the header.
void write_idx(const std::string& path, const std::vector<uint8_t>& px, int n, int claimed = -1,
               uint32_t magic = 0x803) {
  gzFile gz = gzopen(path.c_str(), "wb");
  REQUIRE(gz != nullptr);
  auto be = [](uint32_t v, uint8_t* o) {
    o[0] = (uint8_t)(v >> 24), o[1] = (uint8_t)(v >> 16), o[2] = (uint8_t)(v >> 8), o[3] = (uint8_t)v;
  };
  uint8_t hdr[16];
  be(magic, hdr);
  be((uint32_t)(claimed >= 0 ? claimed : n), hdr + 4);
  be(28, hdr + 8);
  be(28, hdr + 12);
  gzwrite(gz, hdr, 16);
  gzwrite(gz, px.data(), (unsigned)((size_t)n * 784));
  gzclose(gz);
}

// Independent reference for area_resize: 2-D (not separable) overlap of every input pixel with
// the output pixel, in integer units of 1/(out_w) x 1/(out_h) output... i.e. coordinates scaled
// so that input pixel i spans [i*ow, (i+1)*ow) and output pixel o spans [o*iw, (o+1)*iw).
uint8_t ref_area_pixel(const Image& img, int ow, int oh, int ox, int oy, int ch) {
  const int64_t x0 = (int64_t)ox * img.w, x1 = x0 + img.w, y0 = (int64_t)oy * img.h, y1 = y0 + img.h;
  int64_t s = 0, area = 0;
  for (int y = 0; y < img.h; ++y)
    for (int x = 0; x < img.w; ++x) {
      const int64_t ax = std::max<int64_t>(0, std::min(x1, (int64_t)(x + 1) * ow) - std::max(x0, (int64_t)x * ow));
      const int64_t ay = std::max<int64_t>(0, std::min(y1, (int64_t)(y + 1) * oh) - std::max(y0, (int64_t)y * oh));
      s += ax * ay * img.at(x, y)[ch];
      area += ax * ay;
    }
  return (uint8_t)((2 * s + area) / (2 * area));  // floor(mean + 0.5)
}

Image row_image(std::vector<uint8_t> v) {
  Image img;
  img.w = (int)v.size();
  img.h = 1;
  img.c = 1;
  img.px = std::move(v);
  return img;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const prsr::Error& e) { return e.what(); }
  return "<no error>";
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Preprocessing
// ------------------------------------------------------------------------------------------------

TEST_CASE("data: crop and center_square_crop give the exact pixels") {
  Image img;
  img.w = 5, img.h = 4, img.c = 1;
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 5; ++x) img.px.push_back((uint8_t)(10 * y + x));
  Image c = crop(img, 1, 2, 3, 2);
  CHECK(c.w == 3);
  CHECK(c.h == 2);
  CHECK(c.px == std::vector<uint8_t>{21, 22, 23, 31, 32, 33});
  CHECK_THROWS_AS(crop(img, 3, 0, 3, 1), prsr::Error);
  CHECK_THROWS_AS(crop(img, -1, 0, 2, 2), prsr::Error);
  CHECK_THROWS_AS(crop(img, 0, 3, 2, 2), prsr::Error);
  // 5x4 -> 4x4 at x = (5-4)/2 = 0
  Image s = center_square_crop(img);
  CHECK(s.w == 4);
  CHECK(s.px[0] == 0);
  CHECK(s.px[15] == 33);
  // 4x7 (transposed) -> 4x4 at y = (7-4)/2 = 1; RGB kept
  Image tall = make_image(4, 7, 3, 1);
  Image t = center_square_crop(tall);
  CHECK(t.w == 4);
  CHECK(t.h == 4);
  CHECK(t.c == 3);
  CHECK(std::equal(t.px.begin(), t.px.end(), tall.px.begin() + 4 * 3));
}

TEST_CASE("data: area_resize hand-computed values") {
  // 5 -> 2: output 0 covers [0, 2.5): (a + b + c/2) / 2.5; output 1: (c/2 + d + e) / 2.5.
  CHECK(area_resize(row_image({10, 20, 30, 40, 50}), 2, 1).px == std::vector<uint8_t>{18, 42});
  CHECK(area_resize(row_image({3, 0, 0, 0, 4}), 2, 1).px == std::vector<uint8_t>{1, 2});  // 1.2, 1.6
  CHECK(area_resize(row_image({0, 0, 7, 0, 0}), 2, 1).px == std::vector<uint8_t>{1, 1});  // 1.4
  // 3 -> 2: (a + b/2) / 1.5, (b/2 + c) / 1.5 -> 13.33, 26.67
  CHECK(area_resize(row_image({10, 20, 30}), 2, 1).px == std::vector<uint8_t>{13, 27});
  // rounding half up: 1.5 -> 2, 0.5 -> 1, 0.25 -> 0
  CHECK(area_resize(row_image({1, 2}), 1, 1).px == std::vector<uint8_t>{2});
  Image q;
  q.w = 2, q.h = 2, q.c = 1, q.px = {0, 0, 0, 2};
  CHECK(area_resize(q, 1, 1).px == std::vector<uint8_t>{1});
  q.px = {0, 0, 0, 1};
  CHECK(area_resize(q, 1, 1).px == std::vector<uint8_t>{0});
  // 3x3 -> 2x2: weights (1, .5, 0) and (0, .5, 1) per axis, area 2.25.
  //   (0,0): 10 + 20/2 + 40/2 + 50/4 = 52.5 / 2.25 = 23.33 -> 23
  //   (1,0): 20/2 + 30 + 50/4 + 60/2 = 82.5 / 2.25 = 36.67 -> 37
  //   (0,1): 40/2 + 50/4 + 70 + 80/2 = 142.5 / 2.25 = 63.33 -> 63
  //   (1,1): 50/4 + 60/2 + 80/2 + 90 = 172.5 / 2.25 = 76.67 -> 77
  Image m;
  m.w = 3, m.h = 3, m.c = 1, m.px = {10, 20, 30, 40, 50, 60, 70, 80, 90};
  CHECK(area_resize(m, 2, 2).px == std::vector<uint8_t>{23, 37, 63, 77});
  // Upscale 2 -> 3: [0, 2/3) in pixel 0; [2/3, 4/3) half and half; [4/3, 2) in pixel 1.
  CHECK(area_resize(row_image({0, 90}), 3, 1).px == std::vector<uint8_t>{0, 45, 90});
  // Channels are independent.
  Image rgb;
  rgb.w = 2, rgb.h = 1, rgb.c = 3, rgb.px = {0, 10, 255, 1, 20, 255};
  CHECK(area_resize(rgb, 1, 1).px == std::vector<uint8_t>{1, 15, 255});
}

TEST_CASE("data: area_resize 138 -> 32 on constant, linear and random images") {
  Image k;
  k.w = 138, k.h = 138, k.c = 3;
  k.px.assign((size_t)138 * 138 * 3, 77);
  Image kr = area_resize(k, 32, 32);
  CHECK(kr.w == 32);
  CHECK(kr.h == 32);
  CHECK(std::all_of(kr.px.begin(), kr.px.end(), [](uint8_t v) { return v == 77; }));
  // Linear in x: v = x (0..137). Output ox covers [4.3125 ox, 4.3125 (ox+1)), whose mean is its
  // centre minus 1/2 (pixel i holds value i over [i, i+1)): 4.3125 (ox + 1/2) - 1/2.
  Image lin;
  lin.w = 138, lin.h = 138, lin.c = 1;
  for (int y = 0; y < 138; ++y)
    for (int x = 0; x < 138; ++x) lin.px.push_back((uint8_t)x);
  Image lr = area_resize(lin, 32, 32);
  for (int ox = 0; ox < 32; ++ox) {
    const double mean = 4.3125 * (ox + 0.5) - 0.5;  // exact in binary
    CHECK(lr.px[(size_t)5 * 32 + ox] == (uint8_t)std::floor(mean + 0.5));
  }
  // Random RGB against the independent 2-D reference.
  Image r = make_image(138, 138, 3, 7);
  Image rr = area_resize(r, 32, 32);
  int bad = 0;
  for (int oy = 0; oy < 32; ++oy)
    for (int ox = 0; ox < 32; ++ox)
      for (int ch = 0; ch < 3; ++ch) bad += rr.at(ox, oy)[ch] != ref_area_pixel(r, 32, 32, ox, oy, ch);
  CHECK(bad == 0);
  // Non-integer upscale and odd sizes against the reference too.
  Image o = make_image(7, 5, 1, 8);
  Image orr = area_resize(o, 11, 3);
  bad = 0;
  for (int oy = 0; oy < 3; ++oy)
    for (int ox = 0; ox < 11; ++ox) bad += orr.at(ox, oy)[0] != ref_area_pixel(o, 11, 3, ox, oy, 0);
  CHECK(bad == 0);
}

TEST_CASE("data: box_downsample4 is (sum + 8) / 16") {
  auto block = [](std::vector<uint8_t> v) {
    uint8_t x = 0;
    box_downsample4(v.data(), 4, 1, &x);
    return (int)x;
  };
  std::vector<uint8_t> z(16, 0);
  z[5] = 8;  // mean 0.5 -> 1 (half rounds up)
  CHECK(block(z) == 1);
  z[5] = 7;  // mean 0.4375 -> 0
  CHECK(block(z) == 0);
  z[5] = 24;  // mean 1.5 -> 2
  CHECK(block(z) == 2);
  z[5] = 23;  // 1.4375 -> 1
  CHECK(block(z) == 1);
  CHECK(block(std::vector<uint8_t>(16, 255)) == 255);
  // 32x32x3 random against the formula.
  std::vector<uint8_t> y = random_bytes(32 * 32 * 3, 3), x(8 * 8 * 3);
  box_downsample4(y.data(), 32, 3, x.data());
  int bad = 0;
  for (int by = 0; by < 8; ++by)
    for (int bx = 0; bx < 8; ++bx)
      for (int c = 0; c < 3; ++c) {
        int s = 0;
        for (int dy = 0; dy < 4; ++dy)
          for (int dx = 0; dx < 4; ++dx) s += y[((size_t)(4 * by + dy) * 32 + 4 * bx + dx) * 3 + c];
        bad += x[((size_t)by * 8 + bx) * 3 + c] != (s + 8) / 16;
      }
  CHECK(bad == 0);
}

TEST_CASE("data: Fashion-MNIST padding 28x28 -> 32x32") {
  std::vector<uint8_t> src(28 * 28), dst(32 * 32, 99);
  for (int i = 0; i < 28 * 28; ++i) src[(size_t)i] = (uint8_t)(i % 251 + 1);
  pad28_to_32(src.data(), dst.data());
  int bad = 0;
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x) {
      const bool inside = x >= 2 && x < 30 && y >= 2 && y < 30;
      const int want = inside ? src[(size_t)(y - 2) * 28 + (x - 2)] : 0;
      bad += dst[(size_t)y * 32 + x] != want;
    }
  CHECK(bad == 0);
  Image img;
  img.w = 28, img.h = 28, img.c = 1, img.px = src;
  CHECK(zero_pad(img, 2).px == dst);
}

TEST_CASE("data: to_gray and to_rgb") {
  Image c;
  c.w = 3, c.h = 1, c.c = 3, c.px = {255, 0, 0, 0, 255, 0, 10, 20, 30};
  // 0.299*255 = 76.245 -> 76; 0.587*255 = 149.685 -> 150; 2.99+11.74+3.42 = 18.15 -> 18
  CHECK(to_gray(c).px == std::vector<uint8_t>{76, 150, 18});
  // exact half: 0.299*50 + 0.587*50 + 0.114*55 = 50.57 ... use R=G=B -> identity
  Image g;
  g.w = 2, g.h = 1, g.c = 1, g.px = {7, 200};
  CHECK(to_rgb(g).px == std::vector<uint8_t>{7, 7, 7, 200, 200, 200});
  CHECK(to_gray(to_rgb(g)).px == g.px);
}

// ------------------------------------------------------------------------------------------------
// Image I/O
// ------------------------------------------------------------------------------------------------

TEST_CASE("data: PNG round trips and libpng variants") {
  TempDir dir;
  SUBCASE("write_png / read_image, grey and RGB") {
    for (int c : {1, 3}) {
      Image img = make_image(13, 9, c, 10 + c);
      write_png(dir / "rt.png", img);
      Image back = read_image(dir / "rt.png");
      CHECK(back.w == 13);
      CHECK(back.h == 9);
      CHECK(back.c == c);
      CHECK(back.px == img.px);
    }
    // no temp files left behind
    int files = 0;
    for (auto& e : fs::directory_iterator(dir.path)) files += (int)!e.path().empty();
    CHECK(files == 1);
  }
  SUBCASE("RGBA and grey+alpha: alpha dropped") {
    std::vector<std::vector<uint8_t>> rows = {{1, 2, 3, 0, 4, 5, 6, 128}, {7, 8, 9, 255, 10, 11, 12, 9}};
    write_png_raw(dir / "rgba.png", 2, 2, 8, PNG_COLOR_TYPE_RGBA, false, rows);
    Image a = read_image(dir / "rgba.png");
    CHECK(a.c == 3);
    CHECK(a.px == std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
    write_png_raw(dir / "ga.png", 2, 1, 8, PNG_COLOR_TYPE_GRAY_ALPHA, false, {{50, 0, 60, 255}});
    Image ga = read_image(dir / "ga.png");
    CHECK(ga.c == 1);
    CHECK(ga.px == std::vector<uint8_t>{50, 60});
  }
  SUBCASE("palette (with tRNS) -> RGB") {
    std::vector<png_color> pal = {{255, 0, 0}, {0, 128, 0}, {1, 2, 3}};
    write_png_raw(dir / "pal.png", 3, 2, 8, PNG_COLOR_TYPE_PALETTE, false, {{0, 1, 2}, {2, 2, 0}}, pal, {0, 77});
    Image p = read_image(dir / "pal.png");
    CHECK(p.c == 3);
    CHECK(p.px == std::vector<uint8_t>{255, 0, 0, 0, 128, 0, 1, 2, 3, 1, 2, 3, 1, 2, 3, 255, 0, 0});
    // 4-bit palette: two pixels per byte
    write_png_raw(dir / "pal4.png", 2, 1, 4, PNG_COLOR_TYPE_PALETTE, false, {{0x21}}, pal);
    CHECK(read_image(dir / "pal4.png").px == std::vector<uint8_t>{1, 2, 3, 0, 128, 0});
  }
  SUBCASE("16-bit -> 8-bit rounded, low bit depth grey expanded") {
    std::vector<uint8_t> raw = random_bytes(4 * 3 * 2, 21);
    write_png_raw(dir / "rgb16.png", 4, 1, 16, PNG_COLOR_TYPE_RGB, false, {raw});
    Image img = read_image(dir / "rgb16.png");
    CHECK(img.c == 3);
    int bad = 0;
    for (int i = 0; i < 12; ++i) {
      const int v = raw[(size_t)2 * i] * 256 + raw[(size_t)2 * i + 1];  // big-endian in the file
      bad += img.px[(size_t)i] != (2 * v + 257) / 514;                  // round(v / 257)
    }
    CHECK(bad == 0);
    write_png_raw(dir / "g16.png", 2, 1, 16, PNG_COLOR_TYPE_GRAY, false, {{0xff, 0xff, 0x01, 0x00}});
    Image g16 = read_image(dir / "g16.png");
    CHECK(g16.c == 1);
    CHECK(g16.px == std::vector<uint8_t>{255, 1});  // 256 / 257 -> 1
    write_png_raw(dir / "g1.png", 8, 1, 1, PNG_COLOR_TYPE_GRAY, false, {{0xA5}});
    CHECK(read_image(dir / "g1.png").px == std::vector<uint8_t>{255, 0, 255, 0, 0, 255, 0, 255});
    write_png_raw(dir / "g4.png", 2, 1, 4, PNG_COLOR_TYPE_GRAY, false, {{0x3F}});
    CHECK(read_image(dir / "g4.png").px == std::vector<uint8_t>{51, 255});  // v * 17
  }
  SUBCASE("interlaced (Adam7)") {
    Image img = make_image(11, 10, 3, 31);
    std::vector<std::vector<uint8_t>> rows;
    for (int y = 0; y < img.h; ++y) rows.emplace_back(img.at(0, y), img.at(0, y) + img.w * 3);
    write_png_raw(dir / "il.png", img.w, img.h, 8, PNG_COLOR_TYPE_RGB, true, rows);
    Image back = read_image(dir / "il.png");
    CHECK(back.px == img.px);
  }
  SUBCASE("format detected by magic bytes, not extension") {
    Image img = make_image(3, 3, 3, 5);
    write_png(dir / "x.png", img);
    fs::rename(dir / "x.png", dir / "really-a-png.jpg");
    CHECK(read_image(dir / "really-a-png.jpg").px == img.px);
  }
}

TEST_CASE("data: PNG / JPEG errors are exceptions naming the file") {
  TempDir dir;
  Image img = make_image(40, 30, 3, 4);
  write_png(dir / "good.png", img);
  std::vector<uint8_t> bytes = read_bytes(dir / "good.png");
  write_bytes(dir / "trunc.png", std::vector<uint8_t>(bytes.begin(), bytes.begin() + bytes.size() / 2));
  std::vector<uint8_t> flipped = bytes;
  flipped[flipped.size() / 2] ^= 0x55;  // inside IDAT: CRC error
  write_bytes(dir / "crc.png", flipped);
  write_bytes(dir / "empty.png", {});
  write_bytes(dir / "noise.jpg", random_bytes(500, 9));
  write_jpeg(dir / "good.jpg", 200, 150, 3, JCS_RGB, smooth_rgb(200, 150, 1));
  std::vector<uint8_t> jb = read_bytes(dir / "good.jpg");
  write_bytes(dir / "trunc.jpg", std::vector<uint8_t>(jb.begin(), jb.begin() + jb.size() * 2 / 3));
  write_bytes(dir / "header-only.jpg", std::vector<uint8_t>(jb.begin(), jb.begin() + 20));
  for (const char* name :
       {"trunc.png", "crc.png", "empty.png", "noise.jpg", "trunc.jpg", "header-only.jpg", "missing.png"}) {
    const std::string file = name;
    CAPTURE(file);
    const std::string msg = error_of([&] { read_image(dir / file); });
    CHECK(msg.find(dir / file) != std::string::npos);
    CHECK(msg.find('\n') == std::string::npos);
  }
  CHECK(error_of([&] { read_image(dir / "trunc.png"); }).find("truncated") != std::string::npos);
  CHECK(error_of([&] { read_image(dir / "empty.png"); }).find("empty") != std::string::npos);
  CHECK(error_of([&] { read_image(dir / "noise.jpg"); }).find("not a PNG or JPEG") != std::string::npos);
  CHECK(error_of([&] { read_image(dir.path.string()); }).find("directory") != std::string::npos);
  // write_png into a folder that does not exist (works as root too)
  const std::string bad = dir / "no-such-dir/out.png";
  const std::string msg = error_of([&] { write_png(bad, img); });
  CHECK(msg.find(bad) != std::string::npos);
  CHECK(msg.find("No such file") != std::string::npos);
}

TEST_CASE("data: JPEG decode (RGB, grey, CMYK) within JPEG tolerance") {
  TempDir dir;
  std::vector<uint8_t> rgb;
  for (int i = 0; i < 24 * 16; ++i) rgb.insert(rgb.end(), {200, 100, 50});
  write_jpeg(dir / "c.jpg", 24, 16, 3, JCS_RGB, rgb);
  Image c = read_image(dir / "c.jpg");
  CHECK(c.w == 24);
  CHECK(c.h == 16);
  CHECK(c.c == 3);
  int worst = 0;
  for (size_t i = 0; i < c.px.size(); ++i) worst = std::max(worst, std::abs(c.px[i] - rgb[i]));
  CHECK(worst <= 2);
  std::vector<uint8_t> grey(17 * 9, 123);
  write_jpeg(dir / "g.jpg", 17, 9, 1, JCS_GRAYSCALE, grey);
  Image g = read_image(dir / "g.jpg");
  CHECK(g.c == 1);
  CHECK(g.w == 17);
  worst = 0;
  for (size_t i = 0; i < g.px.size(); ++i) worst = std::max(worst, std::abs(g.px[i] - 123));
  CHECK(worst <= 2);
  // A smooth picture stays close too.
  std::vector<uint8_t> sm = smooth_rgb(32, 32, 2);
  write_jpeg(dir / "s.jpg", 32, 32, 3, JCS_RGB, sm, 100);
  Image s = read_image(dir / "s.jpg");
  double err = 0;
  for (size_t i = 0; i < s.px.size(); ++i) err += std::abs(s.px[i] - sm[i]);
  CHECK(err / (double)s.px.size() < 3.0);
  // CMYK with the Adobe marker (stored inverted, as Photoshop does): R = C*K/255.
  std::vector<uint8_t> cmyk;
  for (int i = 0; i < 16 * 8; ++i) cmyk.insert(cmyk.end(), {255, 0, 128, 255});
  write_jpeg(dir / "k.jpg", 16, 8, 4, JCS_CMYK, cmyk);
  Image k = read_image(dir / "k.jpg");
  CHECK(k.c == 3);
  CHECK(std::abs(k.px[0] - 255) <= 3);
  CHECK(std::abs(k.px[1] - 0) <= 3);
  CHECK(std::abs(k.px[2] - 128) <= 3);
}

// ------------------------------------------------------------------------------------------------
// Data sets
// ------------------------------------------------------------------------------------------------

TEST_CASE("data: parse_split, dataset_colors, unknown spec") {
  CHECK(parse_split("train") == Split::Train);
  CHECK(parse_split("valid") == Split::Valid);
  CHECK(parse_split("test") == Split::Test);
  CHECK_THROWS_AS(parse_split("validation"), prsr::Error);
  CHECK(dataset_colors("celeba") == 3);
  CHECK(dataset_colors("fashion-mnist") == 1);
  CHECK(dataset_colors("folder:/x") == 3);
  CHECK(error_of([] { dataset_colors("mnist"); }).find("mnist") != std::string::npos);
  DataOptions o;
  o.spec = "imagenet";
  CHECK_THROWS_AS(load_dataset(o, Split::Train), prsr::Error);
}

TEST_CASE("data: CelebA layout, splits and exact preprocessing") {
  TempDir dir;
  const std::string root = dir / "celeba";
  fs::create_directories(root + "/img_align_celeba");
  // 6 images: 3 train, 2 valid, 1 test (listed out of order).
  const int tags[6] = {0, 1, 0, 2, 0, 1};
  std::ofstream part(root + "/list_eval_partition.txt");
  for (int i = 0; i < 6; ++i) {
    char name[16];
    std::snprintf(name, sizeof name, "%06d.jpg", i + 1);
    write_jpeg(root + "/img_align_celeba/" + name, 178, 218, 3, JCS_RGB, smooth_rgb(178, 218, i), 90);
    part << name << ' ' << tags[i] << "\r\n";  // CRLF tolerated
  }
  part.close();
  DataOptions o;
  o.spec = "celeba";
  o.data_dir = root;
  o.cache_dir = dir / "cache";
  o.progress = false;
  const std::vector<std::vector<int>> members = {{1, 3, 5}, {2, 6}, {4}};
  for (Split s : {Split::Train, Split::Valid, Split::Test}) {
    CAPTURE(split_name(s));
    Dataset ds = load_dataset(o, s);
    const auto& want = members[(size_t)s];
    CHECK(ds.name == "celeba");
    CHECK(ds.colors == 3);
    CHECK(ds.size == 32);
    REQUIRE(ds.n == (int)want.size());
    CHECK(ds.hr.size() == want.size() * 3072);
    CHECK(ds.skipped == 0);
    for (int i = 0; i < ds.n; ++i) {
      char name[16];
      std::snprintf(name, sizeof name, "%06d.jpg", want[(size_t)i]);
      Image ref = area_resize(crop(read_image(root + "/img_align_celeba/" + name), 20, 40, 138, 138), 32, 32);
      CHECK(std::equal(ref.px.begin(), ref.px.end(), ds.image(i)));
    }
    CHECK_THROWS_AS(ds.image(ds.n), prsr::Error);
  }
  // The PNG copy: img_align_celeba_png/000001.png, matched by basename.
  const std::string root2 = dir / "celeba-png";
  fs::create_directories(root2 + "/img_align_celeba_png");
  fs::copy_file(root + "/list_eval_partition.txt", root2 + "/list_eval_partition.txt");
  for (int i : {4}) {
    char jn[16], pn[16];
    std::snprintf(jn, sizeof jn, "%06d.jpg", i);
    std::snprintf(pn, sizeof pn, "%06d.png", i);
    write_png(root2 + "/img_align_celeba_png/" + pn, read_image(root + "/img_align_celeba/" + jn));
  }
  o.data_dir = root2;
  Dataset t2 = load_dataset(o, Split::Test);
  o.data_dir = root;
  Dataset t1 = load_dataset(o, Split::Test);
  CHECK(t2.n == 1);
  CHECK(t2.hr == t1.hr);
}

TEST_CASE("data: CelebA missing gives the download hint") {
  TempDir dir;
  DataOptions o;
  o.spec = "celeba";
  o.data_dir = dir / "nowhere";
  o.cache_dir = dir / "cache";
  const std::string msg = error_of([&] { load_dataset(o, Split::Train); });
  CHECK(msg.find(dir / "nowhere") != std::string::npos);
  CHECK(msg.find("img_align_celeba.zip") != std::string::npos);
  CHECK(msg.find("list_eval_partition.txt") != std::string::npos);
  CHECK(msg.find("mmlab.ie.cuhk.edu.hk") != std::string::npos);
  CHECK(msg.find("--data-dir") != std::string::npos);
  // Images there, partition file missing.
  fs::create_directories(dir / "nowhere/img_align_celeba");
  const std::string msg2 = error_of([&] { load_dataset(o, Split::Train); });
  CHECK(msg2.find("list_eval_partition.txt") != std::string::npos);
  CHECK(msg2.find("mmlab.ie.cuhk.edu.hk") != std::string::npos);
}

TEST_CASE("data: Fashion-MNIST from gzipped IDX, splits and errors") {
  TempDir dir;
  const std::string root = dir / "fm";
  fs::create_directories(root);
  std::vector<uint8_t> train = random_bytes(25 * 784, 50), test = random_bytes(5 * 784, 51);
  write_idx(root + "/train-images-idx3-ubyte.gz", train, 25);
  write_idx(root + "/t10k-images-idx3-ubyte.gz", test, 5);
  DataOptions o;
  o.spec = "fashion-mnist";
  o.data_dir = root;
  o.cache_dir = dir / "cache";
  o.progress = false;
  // 25 <= 10000 train images: valid = the last ceil(25 / 12) = 3.
  Dataset tr = load_dataset(o, Split::Train), va = load_dataset(o, Split::Valid), te = load_dataset(o, Split::Test);
  CHECK(tr.colors == 1);
  CHECK(tr.n == 22);
  CHECK(va.n == 3);
  CHECK(te.n == 5);
  std::vector<uint8_t> want(1024);
  pad28_to_32(train.data() + 0 * 784, want.data());
  CHECK(std::equal(want.begin(), want.end(), tr.image(0)));
  pad28_to_32(train.data() + 21 * 784, want.data());
  CHECK(std::equal(want.begin(), want.end(), tr.image(21)));
  pad28_to_32(train.data() + 22 * 784, want.data());
  CHECK(std::equal(want.begin(), want.end(), va.image(0)));
  pad28_to_32(test.data() + 4 * 784, want.data());
  CHECK(std::equal(want.begin(), want.end(), te.image(4)));
  CHECK(tr.image(3)[0] == 0);  // padding
  CHECK(tr.image(3)[33] == 0);
  CHECK(tr.image(3)[2 * 32 + 2] == train[3 * 784]);

  // Truncated: header says 10 images, 3 present.
  const std::string bad = dir / "bad";
  fs::create_directories(bad);
  write_idx(bad + "/t10k-images-idx3-ubyte.gz", test, 3, 10);
  o.data_dir = bad;
  std::string msg = error_of([&] { load_dataset(o, Split::Test); });
  CHECK(msg.find("truncated") != std::string::npos);
  CHECK(msg.find(bad) != std::string::npos);
  // Wrong magic (a labels file).
  write_idx(bad + "/t10k-images-idx3-ubyte.gz", test, 5, -1, 0x801);
  CHECK(error_of([&] { load_dataset(o, Split::Test); }).find("00000801") != std::string::npos);
  // A cut gzip stream.
  write_idx(root + "/x.gz", test, 5);
  std::vector<uint8_t> gzb = read_bytes(root + "/x.gz");
  write_bytes(bad + "/t10k-images-idx3-ubyte.gz", std::vector<uint8_t>(gzb.begin(), gzb.begin() + gzb.size() / 2));
  CHECK_THROWS_AS(load_dataset(o, Split::Test), prsr::Error);
  // Missing.
  o.data_dir = dir / "none";
  msg = error_of([&] { load_dataset(o, Split::Train); });
  CHECK(msg.find("apt-get install dataset-fashion-mnist") != std::string::npos);
  CHECK(msg.find("--data-dir") != std::string::npos);
}

TEST_CASE("data: installed Fashion-MNIST test split (when the package is there)") {
  if (!fs::exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")) {
    MESSAGE("dataset-fashion-mnist not installed; skipping the real-file check");
    return;
  }
  TempDir dir;
  DataOptions o;
  o.spec = "fashion-mnist";
  o.cache_dir = dir / "cache";
  o.progress = false;
  Dataset a = load_dataset(o, Split::Test);
  CHECK(a.n == 10000);
  CHECK_FALSE(a.from_cache);
  Dataset b = load_dataset(o, Split::Test);
  CHECK(b.from_cache);
  CHECK(b.hr == a.hr);
}

TEST_CASE("data: folder with corrupt files: reported, skipped, counted") {
  TempDir dir;
  const std::string root = dir / "imgs";
  fs::create_directories(root + "/sub");
  Image a = make_image(40, 30, 3, 60);
  write_png(root + "/a.png", a);
  write_jpeg(root + "/sub/B.JPG", 20, 25, 1, JCS_GRAYSCALE, std::vector<uint8_t>(20 * 25, 90));
  std::vector<uint8_t> full = read_bytes(root + "/a.png");
  write_bytes(root + "/c-trunc.png", std::vector<uint8_t>(full.begin(), full.begin() + full.size() / 3));
  write_bytes(root + "/d-noise.jpg", random_bytes(300, 61));
  write_bytes(root + "/e-empty.png", {});
  write_bytes(root + "/notes.txt", {'h', 'i'});
  DataOptions o;
  o.spec = "folder:" + root;
  o.cache_dir = dir / "cache";
  o.progress = false;
  std::string err;
  Dataset ds;
  {
    CaptureStderr cap(dir);
    ds = load_dataset(o, Split::Train);
    err = cap.text();
  }
  CHECK(ds.n == 2);
  CHECK(ds.skipped == 3);
  CHECK(ds.colors == 3);
  CHECK(err.find("skipped 3 unreadable files") != std::string::npos);
  CHECK(err.find("c-trunc.png") != std::string::npos);
  CHECK(err.find("d-noise.jpg") != std::string::npos);
  CHECK(err.find("e-empty.png") != std::string::npos);
  // Order by relative path: "a.png" < "sub/B.JPG"; grey converted to RGB.
  Image ra = folder_preprocess(read_image(root + "/a.png"));
  CHECK(std::equal(ra.px.begin(), ra.px.end(), ds.image(0)));
  Image rb = area_resize(to_rgb(crop(read_image(root + "/sub/B.JPG"), 0, 2, 20, 20)), 32, 32);
  CHECK(std::equal(rb.px.begin(), rb.px.end(), ds.image(1)));
  // < 20 images: every split has all of them; from the cache the count is still reported.
  Dataset te;
  {
    CaptureStderr cap(dir);
    te = load_dataset(o, Split::Test);
    err = cap.text();
  }
  CHECK(te.n == 2);
  CHECK(te.hr == ds.hr);
  Dataset again;
  {
    CaptureStderr cap(dir);
    again = load_dataset(o, Split::Train);
    err = cap.text();
  }
  CHECK(again.from_cache);
  CHECK(again.skipped == 3);
  CHECK(err.find("3 unreadable files were skipped") != std::string::npos);
  // Nothing usable -> Error.
  const std::string junk = dir / "junk";
  fs::create_directories(junk);
  write_bytes(junk + "/x.png", {});
  o.spec = "folder:" + junk;
  {
    CaptureStderr cap(dir);
    CHECK(error_of([&] { load_dataset(o, Split::Train); }).find("no usable image") != std::string::npos);
  }
  o.spec = "folder:" + (dir / "does-not-exist");
  CHECK(error_of([&] { load_dataset(o, Split::Train); }).find("not a directory") != std::string::npos);
}

// FNV-1a 64 written out here from its definition (offset basis 14695981039346656037, prime
// 1099511628211), independent of the product's copies.
static uint64_t standard_fnv1a64(const std::string& s) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// "dir/img0007.png": zero-padded, so that index order is path order.
static std::string split_test_name(int i) {
  char name[32];
  std::snprintf(name, sizeof name, "dir/img%04d.png", i);
  return name;
}

// The split of each of `total` files split_test_name(i) as folder_split_files gives them: for
// every file the list of splits that hold it.
static std::vector<std::vector<Split>> splits_of(int total) {
  std::vector<std::string> rel;
  for (int i = 0; i < total; ++i) rel.push_back(split_test_name(i));
  std::vector<std::vector<Split>> in(total);
  for (Split s : {Split::Train, Split::Valid, Split::Test}) {
    const std::vector<std::string> got = folder_split_files(rel, s);
    CHECK(std::is_sorted(got.begin(), got.end()));
    for (const std::string& g : got) in[std::lower_bound(rel.begin(), rel.end(), g) - rel.begin()].push_back(s);
  }
  return in;
}

TEST_CASE("data: folder split rule: < 20 images in every split, else one split each, none empty") {
  for (int total : {1, 2, 19}) {
    for (const auto& in : splits_of(total)) CHECK(in.size() == 3);
  }
  // From 20 images on, each file is in exactly one split and no split is empty, whatever the
  // hash gives (for small folders it often gives an empty valid or test split: the repair).
  int repaired = 0;
  for (int total = 20; total <= 120; ++total) {
    int counts[3] = {0, 0, 0};
    for (const auto& in : splits_of(total)) {
      REQUIRE(in.size() == 1);
      ++counts[(int)in[0]];
    }
    INFO("total " << total);
    CHECK(counts[0] >= 1);
    CHECK(counts[1] >= 1);
    CHECK(counts[2] >= 1);
    // Only the repair moves images: at most two, and only when the hash left a split empty.
    int hashed[3] = {0, 0, 0}, moved = 0;
    const auto in = splits_of(total);
    for (int i = 0; i < total; ++i) {
      const int bucket = int(standard_fnv1a64(split_test_name(i)) % 100);
      const int s = bucket < 90 ? 0 : bucket < 95 ? 1 : 2;
      ++hashed[s];
      moved += (int)in[i][0] != s;
    }
    const int empty = (hashed[0] == 0) + (hashed[1] == 0) + (hashed[2] == 0);
    CHECK(moved == empty);
    repaired += empty > 0;
  }
  CHECK(repaired > 0);  // the repair was exercised
  // Large folders: the 90/5/5 hash rule, untouched.
  int counts[3] = {0, 0, 0};
  for (const auto& in : splits_of(1000)) {
    REQUIRE(in.size() == 1);
    ++counts[(int)in[0]];
  }
  CHECK(counts[0] > 850);
  CHECK(counts[1] > 20);
  CHECK(counts[2] > 20);
}

TEST_CASE("data: folder progress bar / long skip report") {
  // 110 tiny images (12 of them empty): a progress bar and "... and 2 more".
  TempDir dir;
  const std::string root = dir / "many";
  fs::create_directories(root);
  Image img = make_image(4, 4, 3, 70);
  write_png(root + "/img000.png", img);
  for (int i = 1; i < 110; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "/img%03d.png", i);
    if (i <= 12) write_bytes(root + name, {});
    else fs::copy_file(root + "/img000.png", root + name);
  }
  DataOptions o;
  o.spec = "folder:" + root;
  o.cache_dir = dir / "cache";
  o.progress = true;
  Dataset tr;
  std::string err;
  {
    CaptureStderr cap(dir);
    tr = load_dataset(o, Split::Train);
    err = cap.text();
  }
  std::vector<std::string> all;
  for (int i = 0; i < 110; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "img%03d.png", i);
    all.push_back(name);
  }
  int expect = 0, expect_skip = 0;
  for (const std::string& name : folder_split_files(all, Split::Train)) {
    const int i = std::stoi(name.substr(3, 3));
    (i >= 1 && i <= 12 ? expect_skip : expect) += 1;
  }
  CHECK(tr.n == expect);
  CHECK(tr.skipped == expect_skip);
  CHECK(err.find("decoding folder:") != std::string::npos);
  CHECK(err.find("img/s") != std::string::npos);
  CHECK(err.find("ETA") != std::string::npos);
  CHECK(err.find("[####################]") != std::string::npos);
  if (expect_skip > 10) CHECK(err.find("... and " + std::to_string(expect_skip - 10) + " more") != std::string::npos);
  CHECK(err.find("skipped " + std::to_string(expect_skip) + " unreadable files") != std::string::npos);
}

TEST_CASE("data: cache hit, invalidation, corruption, unwritable folder") {
  TempDir dir;
  const std::string root = dir / "fm";
  fs::create_directories(root);
  std::vector<uint8_t> test = random_bytes(7 * 784, 80);
  const std::string idx = root + "/t10k-images-idx3-ubyte.gz";
  write_idx(idx, test, 7);
  DataOptions o;
  o.spec = "fashion-mnist";
  o.data_dir = root;
  o.cache_dir = dir / "cache";
  o.progress = false;
  Dataset a = load_dataset(o, Split::Test);
  CHECK_FALSE(a.from_cache);
  REQUIRE(!a.cache_path.empty());
  CHECK(fs::exists(a.cache_path));
  CHECK(fs::file_size(a.cache_path) == 48 + 7 * 1024);
  Dataset b = load_dataset(o, Split::Test);
  CHECK(b.from_cache);
  CHECK(b.n == 7);
  CHECK(b.hr == a.hr);
  CHECK(b.cache_path == a.cache_path);

  // Touching the source (mtime only) invalidates; the old cache file is removed.
  fs::last_write_time(idx, fs::last_write_time(idx) + std::chrono::seconds(5));
  Dataset c = load_dataset(o, Split::Test);
  CHECK_FALSE(c.from_cache);
  CHECK(c.hr == a.hr);
  CHECK(c.cache_path != a.cache_path);
  CHECK_FALSE(fs::exists(a.cache_path));
  // Changing the content (and size) invalidates and gives the new pixels.
  test[100] ^= 0xFF;
  write_idx(idx, test, 6);
  Dataset d = load_dataset(o, Split::Test);
  CHECK_FALSE(d.from_cache);
  CHECK(d.n == 6);
  std::vector<uint8_t> want(1024);
  pad28_to_32(test.data(), want.data());
  CHECK(std::equal(want.begin(), want.end(), d.image(0)));
  CHECK(load_dataset(o, Split::Test).from_cache);

  // A corrupted payload byte -> checksum mismatch -> rebuilt, correct again.
  {
    std::vector<uint8_t> cb = read_bytes(d.cache_path);
    cb[48 + 2 * 32 + 2] ^= 0x01;
    write_bytes(d.cache_path, cb);
  }
  Dataset e;
  {
    CaptureStderr cap(dir);
    e = load_dataset(o, Split::Test);
    CHECK(cap.text().find("checksum") != std::string::npos);
  }
  CHECK_FALSE(e.from_cache);
  CHECK(e.hr == d.hr);
  CHECK(load_dataset(o, Split::Test).from_cache);
  // A truncated cache file -> rebuilt.
  {
    std::vector<uint8_t> cb = read_bytes(d.cache_path);
    write_bytes(d.cache_path, std::vector<uint8_t>(cb.begin(), cb.begin() + 1000));
  }
  Dataset f;
  {
    CaptureStderr cap(dir);
    f = load_dataset(o, Split::Test);
  }
  CHECK_FALSE(f.from_cache);
  CHECK(f.hr == d.hr);
  CHECK(fs::file_size(d.cache_path) == 48 + 6 * 1024);
  // Exactly one cache file for the split, no temp files.
  int files = 0;
  for (auto& ent : fs::directory_iterator(dir / "cache")) files += (int)!ent.path().empty();
  CHECK(files == 1);

  // A cache folder that cannot be created (a file is in the way): warn, no cache, still loads.
  write_bytes(dir / "blocker", {'x'});
  o.cache_dir = dir / "blocker/cache";
  Dataset g;
  {
    CaptureStderr cap(dir);
    g = load_dataset(o, Split::Test);
  }
  CHECK(g.n == 6);
  CHECK(g.hr == d.hr);
  CHECK_FALSE(g.from_cache);
  CHECK(g.cache_path.empty());
}
