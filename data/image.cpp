// PNG / JPEG decoding and PNG writing. The libpng and libjpeg calls live in C-style functions
// (png_decode_c, png_encode_c, jpeg_decode_c) that hold only plain pointers and C structs: the
// libraries' error handlers longjmp back into those functions, which free what they allocated
// and return an error code; the C++ wrappers then throw prsr::Error. No longjmp ever crosses a
// C++ object with a destructor and no library error ends the process.
#include "data/image.h"

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>

#include <jpeglib.h>
#include <png.h>

#include "engine/error.h"

namespace prsr::data {
namespace {

constexpr unsigned kMaxDim = 1u << 15;       // 32768 pixels per side
constexpr uint64_t kMaxPixels = 1ull << 28;  // 268M pixels per image

// Result of the C-style decoders: `px` is malloc'ed and owned by the caller.
struct RawImage {
  int w, h, c;
  uint8_t* px;
};

// ---------------------------------------------------------------------------------------------
// PNG
// ---------------------------------------------------------------------------------------------

struct PngCtx {
  const uint8_t* data;  // reading: the file bytes
  size_t size, pos;
  char msg[256];  // the library's error message
};

void png_error_to_jmp(png_structp png, png_const_charp m) {
  auto* ctx = static_cast<PngCtx*>(png_get_error_ptr(png));
  std::snprintf(ctx->msg, sizeof ctx->msg, "%s", m ? m : "libpng error");
  longjmp(png_jmpbuf(png), 1);
}

void png_warning_quiet(png_structp, png_const_charp) {}

void png_read_from_memory(png_structp png, png_bytep out, size_t n) {
  auto* ctx = static_cast<PngCtx*>(png_get_io_ptr(png));
  if (n > ctx->size - ctx->pos) png_error(png, "unexpected end of file (truncated)");
  std::memcpy(out, ctx->data + ctx->pos, n);
  ctx->pos += n;
}

// Holds no C++ objects: libpng's longjmp lands here. Returns 0 on success.
int png_decode_c(PngCtx* ctx, RawImage* out) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, ctx, png_error_to_jmp, png_warning_quiet);
  if (!png) {
    std::snprintf(ctx->msg, sizeof ctx->msg, "out of memory");
    return 1;
  }
  png_infop info = png_create_info_struct(png);
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    std::snprintf(ctx->msg, sizeof ctx->msg, "out of memory");
    return 1;
  }
  uint8_t* volatile px = nullptr;
  png_bytep* volatile rows = nullptr;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    std::free(px);
    std::free(rows);
    return 1;
  }
  png_set_read_fn(png, ctx, png_read_from_memory);
  png_set_user_limits(png, kMaxDim, kMaxDim);
  png_read_info(png, info);
  png_uint_32 w = 0, h = 0;
  int depth = 0, color = 0, interlace = 0;
  png_get_IHDR(png, info, &w, &h, &depth, &color, &interlace, nullptr, nullptr);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if ((color & PNG_COLOR_MASK_COLOR) == 0 && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (depth == 16) png_set_scale_16(png);  // round(v * 255 / 65535)
  png_set_strip_alpha(png);                // alpha channel or tRNS: dropped
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const int ch = png_get_channels(png, info);
  if (ch != 1 && ch != 3) png_error(png, "unsupported channel layout");
  if ((uint64_t)w * h > kMaxPixels) png_error(png, "image too large");
  const size_t rowbytes = png_get_rowbytes(png, info);
  if (rowbytes != (size_t)w * ch) png_error(png, "unexpected row size");
  px = static_cast<uint8_t*>(std::malloc((size_t)h * rowbytes));
  rows = static_cast<png_bytep*>(std::malloc((size_t)h * sizeof(png_bytep)));
  if (!px || !rows) png_error(png, "out of memory");
  for (png_uint_32 y = 0; y < h; ++y) rows[y] = px + (size_t)y * rowbytes;
  png_read_image(png, rows);
  png_read_end(png, nullptr);  // reads up to IEND: a file cut after the pixels is an error too
  png_destroy_read_struct(&png, &info, nullptr);
  std::free(rows);
  out->w = (int)w;
  out->h = (int)h;
  out->c = ch;
  out->px = px;
  return 0;
}

// Holds no C++ objects. Writes an 8-bit grey / RGB PNG to an open FILE. Returns 0 on success.
int png_encode_c(FILE* f, const uint8_t* px, int w, int h, int c, PngCtx* ctx) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, ctx, png_error_to_jmp, png_warning_quiet);
  if (!png) {
    std::snprintf(ctx->msg, sizeof ctx->msg, "out of memory");
    return 1;
  }
  png_infop info = png_create_info_struct(png);
  if (!info) {
    png_destroy_write_struct(&png, nullptr);
    std::snprintf(ctx->msg, sizeof ctx->msg, "out of memory");
    return 1;
  }
  png_bytep* volatile rows = nullptr;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    std::free(rows);
    return 1;
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, c == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  rows = static_cast<png_bytep*>(std::malloc((size_t)h * sizeof(png_bytep)));
  if (!rows) png_error(png, "out of memory");
  for (int y = 0; y < h; ++y) rows[y] = const_cast<png_bytep>(px + (size_t)y * w * c);
  png_set_rows(png, info, rows);
  png_write_png(png, info, PNG_TRANSFORM_IDENTITY, nullptr);
  png_destroy_write_struct(&png, &info);
  std::free(rows);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// JPEG
// ---------------------------------------------------------------------------------------------

struct JpegErr {
  jpeg_error_mgr pub;  // first member: libjpeg sees a jpeg_error_mgr*
  jmp_buf jb;
  char msg[JMSG_LENGTH_MAX];
};

void jpeg_error_to_jmp(j_common_ptr cinfo) {
  auto* e = reinterpret_cast<JpegErr*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->msg);
  longjmp(e->jb, 1);
}

// Warnings (level -1) are "corrupt data" / "premature end of file": treated as errors.
void jpeg_emit_strict(j_common_ptr cinfo, int level) {
  if (level < 0) jpeg_error_to_jmp(cinfo);
}

void jpeg_output_quiet(j_common_ptr) {}

// Holds no C++ objects: libjpeg's longjmp lands here. Returns 0 on success.
int jpeg_decode_c(const uint8_t* data, size_t size, JpegErr* err, RawImage* out) {
  jpeg_decompress_struct cinfo;
  std::memset(&cinfo, 0, sizeof cinfo);
  uint8_t* volatile px = nullptr;
  cinfo.err = jpeg_std_error(&err->pub);
  err->pub.error_exit = jpeg_error_to_jmp;
  err->pub.emit_message = jpeg_emit_strict;
  err->pub.output_message = jpeg_output_quiet;
  if (setjmp(err->jb)) {
    jpeg_destroy_decompress(&cinfo);
    std::free(px);
    return 1;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, (unsigned long)size);
  jpeg_read_header(&cinfo, TRUE);
  const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  if (cmyk) cinfo.out_color_space = JCS_CMYK;
  else if (cinfo.num_components == 1) cinfo.out_color_space = JCS_GRAYSCALE;
  else cinfo.out_color_space = JCS_RGB;
  if ((uint64_t)cinfo.image_width * cinfo.image_height > kMaxPixels || cinfo.image_width > kMaxDim ||
      cinfo.image_height > kMaxDim) {
    std::snprintf(err->msg, sizeof err->msg, "image too large (%ux%u)", cinfo.image_width, cinfo.image_height);
    longjmp(err->jb, 1);
  }
  jpeg_start_decompress(&cinfo);
  const int w = (int)cinfo.output_width, h = (int)cinfo.output_height;
  const int oc = cinfo.output_components;
  if (oc != (cmyk ? 4 : cinfo.out_color_space == JCS_GRAYSCALE ? 1 : 3)) {
    std::snprintf(err->msg, sizeof err->msg, "unexpected output components (%d)", oc);
    longjmp(err->jb, 1);
  }
  px = static_cast<uint8_t*>(std::malloc((size_t)w * h * oc));
  if (!px) {
    std::snprintf(err->msg, sizeof err->msg, "out of memory");
    longjmp(err->jb, 1);
  }
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = px + (size_t)cinfo.output_scanline * w * oc;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  const bool adobe_inverted = cinfo.saw_Adobe_marker;
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  if (cmyk) {
    // In place, 4 -> 3 bytes per pixel (pixel i is read at 4i before 3i.. is written).
    // Adobe (Photoshop) files store inverted CMYK: R = C * K / 255; plain CMYK:
    // R = (255 - C) * (255 - K) / 255. Rounded to nearest.
    for (size_t i = 0; i < (size_t)w * h; ++i) {
      int c4[4] = {px[4 * i], px[4 * i + 1], px[4 * i + 2], px[4 * i + 3]};
      if (!adobe_inverted)
        for (int& v : c4) v = 255 - v;
      for (int k = 0; k < 3; ++k) px[3 * i + k] = (uint8_t)((c4[k] * c4[3] + 127) / 255);
    }
  }
  out->w = w;
  out->h = h;
  out->c = cmyk ? 3 : oc;
  out->px = px;
  return 0;
}

Image take_raw(RawImage& raw) {
  Image img;
  img.w = raw.w;
  img.h = raw.h;
  img.c = raw.c;
  // Copy then free: keeps the malloc'ed buffer's ownership simple and exception safe.
  struct Free {
    uint8_t* p;
    ~Free() { std::free(p); }
  } guard{raw.px};
  img.px.assign(raw.px, raw.px + (size_t)raw.w * raw.h * raw.c);
  return img;
}

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot read " + path + ": " + std::strerror(errno));
  struct Close {
    int fd;
    ~Close() { ::close(fd); }
  } guard{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0) throw Error("cannot read " + path + ": " + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) throw Error("cannot read " + path + ": is a directory");
  std::vector<uint8_t> bytes;
  if (st.st_size > 0) bytes.reserve((size_t)st.st_size);
  uint8_t buf[1 << 16];
  for (;;) {
    ssize_t got = ::read(fd, buf, sizeof buf);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw Error("cannot read " + path + ": " + std::strerror(errno));
    }
    if (got == 0) break;
    bytes.insert(bytes.end(), buf, buf + got);
  }
  return bytes;
}

}  // namespace

Image decode_image(const uint8_t* data, size_t size, const std::string& name) {
  static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (size == 0) throw Error(name + ": empty file");
  if (size >= 8 && std::memcmp(data, png_magic, 8) == 0) {
    PngCtx ctx{data, size, 0, {0}};
    RawImage raw{0, 0, 0, nullptr};
    if (png_decode_c(&ctx, &raw) != 0) throw Error(name + ": corrupt PNG: " + ctx.msg);
    return take_raw(raw);
  }
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) {
    JpegErr err;
    std::memset(&err, 0, sizeof err);
    RawImage raw{0, 0, 0, nullptr};
    if (jpeg_decode_c(data, size, &err, &raw) != 0) throw Error(name + ": corrupt JPEG: " + err.msg);
    return take_raw(raw);
  }
  throw Error(name + ": not a PNG or JPEG file");
}

Image read_image(const std::string& path) {
  std::vector<uint8_t> bytes = read_file_bytes(path);
  return decode_image(bytes.data(), bytes.size(), path);
}

void write_png(const std::string& path, const Image& img) {
  check(img.c == 1 || img.c == 3,
        "cannot write " + path + ": PNG writer takes 1 or 3 channels, got " + std::to_string(img.c));
  check(img.w > 0 && img.h > 0 && img.px.size() == (size_t)img.w * img.h * img.c,
        "cannot write " + path + ": image has inconsistent size");
  static std::atomic<unsigned> counter{0};
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1));
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error("cannot write " + path + ": " + std::strerror(errno));
  PngCtx ctx{nullptr, 0, 0, {0}};
  int rc = png_encode_c(f, img.px.data(), img.w, img.h, img.c, &ctx);
  std::string reason = rc != 0 ? std::string(ctx.msg) : std::string();
  if (rc == 0 && std::fflush(f) != 0) rc = 1, reason = std::strerror(errno);
  if (rc == 0 && ::fsync(fileno(f)) != 0) rc = 1, reason = std::strerror(errno);
  if (std::fclose(f) != 0 && rc == 0) rc = 1, reason = std::strerror(errno);
  if (rc == 0 && std::rename(tmp.c_str(), path.c_str()) != 0) rc = 1, reason = std::strerror(errno);
  if (rc != 0) {
    std::remove(tmp.c_str());
    throw Error("cannot write " + path + ": " + reason);
  }
}

Image to_rgb(const Image& img) {
  check(img.c == 1 || img.c == 3, "to_rgb: expected 1 or 3 channels, got " + std::to_string(img.c));
  if (img.c == 3) return img;
  Image out;
  out.w = img.w;
  out.h = img.h;
  out.c = 3;
  out.px.resize((size_t)img.w * img.h * 3);
  for (size_t i = 0; i < (size_t)img.w * img.h; ++i) out.px[3 * i] = out.px[3 * i + 1] = out.px[3 * i + 2] = img.px[i];
  return out;
}

Image to_gray(const Image& img) {
  check(img.c == 1 || img.c == 3, "to_gray: expected 1 or 3 channels, got " + std::to_string(img.c));
  if (img.c == 1) return img;
  Image out;
  out.w = img.w;
  out.h = img.h;
  out.c = 1;
  out.px.resize((size_t)img.w * img.h);
  for (size_t i = 0; i < (size_t)img.w * img.h; ++i) {
    const int r = img.px[3 * i], g = img.px[3 * i + 1], b = img.px[3 * i + 2];
    out.px[i] = (uint8_t)((299 * r + 587 * g + 114 * b + 500) / 1000);
  }
  return out;
}

}  // namespace prsr::data
