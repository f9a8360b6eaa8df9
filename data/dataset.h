// The data sets: CelebA, Fashion-MNIST, LSUN and a folder of images, decoded and preprocessed once
// into 32x32 uint8 targets y and cached as packed files so training never decodes in its loop.
// See docs/data.md for the folders, the splits, the preprocessing and the cache format.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace prsr::data {

enum class Split { Train, Valid, Test };
Split parse_split(const std::string& s);  // "train" | "valid" | "test", else prsr::Error
const char* split_name(Split s);

struct DataOptions {
  std::string spec;       // "celeba" | "fashion-mnist" | "lsun" | "folder:PATH"
  std::string data_dir;   // empty = datasets/celeba (CelebA), /usr/share/datasets/fashion-mnist
                          // (Fashion-MNIST), datasets/lsun (LSUN); for folder:PATH an empty PATH
                          // uses data_dir
  std::string cache_dir;  // empty = "datasets/cache"; relative paths are to the current dir
  bool progress = true;   // progress bar on stderr while decoding (>= 100 files)
  // lsun: reads <data_dir>/<lsun_category>_{train,val}_lmdb; the train split is only the first
  // `limit` train records (0 = all), valid and test are unchanged by it.
  std::string lsun_category = "bedroom";
  long limit = 0;
  // Tests: an LSUN cache build throws after committing this many records to its partial file,
  // as if interrupted (0 = off).
  long debug_stop_after = 0;
};

struct Dataset {
  std::string name;            // "celeba", "fashion-mnist", "folder"
  int colors = 0;              // C: 3 (RGB) or 1 (grey)
  int n = 0;                   // number of images
  int size = 32;               // images are size x size x colors
  std::vector<uint8_t> hr;     // n * size*size*colors, HWC per image, image i at i*size*size*colors
  int skipped = 0;             // source files that were unreadable / corrupt and left out
  bool from_cache = false;     // true when the pixels came from the cache file
  std::string cache_path;      // the cache file used or written ("" when caching was off)
  int resumed = 0;             // images taken from an interrupted build's partial file (LSUN)
  bool shared_splits = false;  // every split holds the same images (a folder of fewer than
                               // kFolderSplitMin images): the valid split is not held out

  size_t image_bytes() const { return (size_t)size * size * colors; }
  const uint8_t* image(int i) const;  // throws prsr::Error when i is out of range
};

// Loads (from the cache when it is valid, else by decoding and writing the cache) one split.
// Throws prsr::Error when the data set is missing (with where it was looked for and how to get
// it) or has no usable image in the split.
Dataset load_dataset(const DataOptions& opt, Split split);

// 3 for celeba, lsun and folder:..., 1 for fashion-mnist; prsr::Error for an unknown spec.
int dataset_colors(const std::string& spec);

// Every .png / .jpg / .jpeg file (extension in any case) under root, subfolders included, as
// paths relative to root with '/' separators, sorted by that string; unreadable subfolders are
// skipped. The folder data set's file list; also ./build/sample --input DIR. An Error
// ("cannot list ROOT: reason") when root cannot be listed.
std::vector<std::string> list_image_files(const std::string& root);

// A folder data set with fewer images than this puts every image in every split (a handful of
// pictures can still be trained on, sampled and evaluated; nothing is held out).
constexpr int kFolderSplitMin = 20;

// The files of `split` among a folder data set's files (relative paths, '/' separators, sorted),
// sorted. Fewer than kFolderSplitMin files: all of them, for every split. Otherwise each file's
// split is FNV-1a(relpath) % 100: < 90 train, < 95 valid, else test; a split left empty takes
// the highest-(bucket, path) file of the largest split, so every split holds at least one image
// and each image is in exactly one split. See docs/data.md.
std::vector<std::string> folder_split_files(const std::vector<std::string>& relpaths, Split split);

}  // namespace prsr::data
