// Classify skin-lesion images with a skinonnx ONNX model from C++ (ONNX Runtime C++ API, libjpeg, libpng).
//
//   make                      (see README.md: headers from libonnxruntime-dev, the library from any ORT >= 1.21)
//   ./skinonnx_classify MODEL.onnx IMAGE...
//
// Prints one JSON object per image: {"path", "label", "probabilities": {class: p}, "logits": [...]} (and
// "p_malignant", "malignant" where the file has those outputs), like
// examples/python_minimal.py and examples/node. Everything comes from the model's metadata
// (docs/EMBEDDING.md): JPEG decoded by libjpeg at Pillow's draft scale (scale_denom 2/4/8), EXIF orientation
// applied, PNG alpha composited on white, the shorter side resized with a port of Pillow's BILINEAR filter,
// centre crop, normalisation (or none of the last two for the uint8-input variant). 8-bit images; JPEG and PNG.
#include <onnxruntime_cxx_api.h>

#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr long long kMaxPixels = 50000000;  // the Python tool's decompression-bomb guard

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // packed RGB, row-major
};

// ---- the contract, from metadata_props ------------------------------------------------------------

// Minimal parsing of the JSON lists the metadata holds: ["a", "b"] and [0.485, 0.456, 0.406].
std::vector<std::string> json_strings(const std::string& text) {
  std::vector<std::string> out;
  for (size_t i = 0; (i = text.find('"', i)) != std::string::npos;) {
    size_t j = text.find('"', i + 1);
    if (j == std::string::npos) throw std::runtime_error("malformed JSON list: " + text);
    out.push_back(text.substr(i + 1, j - i - 1));
    i = j + 1;
  }
  return out;
}

std::vector<double> json_numbers(const std::string& text) {
  std::vector<double> out;
  std::string cleaned = text;
  for (char& c : cleaned) if (c == '[' || c == ']' || c == ',') c = ' ';
  std::istringstream in(cleaned);
  for (double v; in >> v;) out.push_back(v);
  return out;
}

struct Contract {
  std::vector<std::string> classes;
  int positive_index = 1;
  double threshold = 0.5;
  int image_size = 224, resize_size = 256;
  double mean[3], std_[3];
  std::string input_name;
  bool uint8 = false;
  std::string refusal;  // shown instead of a class when the graph's in_distribution output is false
  bool malignancy = false;  // the graph has 'p_malignant' and 'malignant' (files exported since they exist)
};

Contract read_contract(const Ort::Session& session) {
  Ort::AllocatorWithDefaultOptions alloc;
  Ort::ModelMetadata meta = session.GetModelMetadata();
  std::map<std::string, std::string> m;
  for (auto& key : meta.GetCustomMetadataMapKeysAllocated(alloc)) {
    m[key.get()] = meta.LookupCustomMetadataMapAllocated(key.get(), alloc).get();
  }
  if (!m.count("skinonnx_schema_version")) throw std::runtime_error("not a skinonnx model (no skinonnx_schema_version)");
  if (m["skinonnx_schema_version"] != "1") throw std::runtime_error("metadata schema " + m["skinonnx_schema_version"] + " is not supported");
  if (m["interpolation"] != "bilinear") throw std::runtime_error("interpolation " + m["interpolation"] + " is not implemented here");
  Contract c;
  c.classes = json_strings(m["classes"]);
  c.positive_index = std::stoi(m["positive_index"]);
  c.threshold = std::stod(m["decision_threshold"]);
  c.image_size = std::stoi(m["image_size"]);
  c.resize_size = std::stoi(m["resize_size"]);
  auto mean = json_numbers(m["mean"]), std_ = json_numbers(m["std"]);
  if (c.classes.size() < 2 || mean.size() != 3 || std_.size() != 3) throw std::runtime_error("malformed metadata");
  for (int i = 0; i < 3; i++) c.mean[i] = mean[i], c.std_[i] = std_[i];
  c.input_name = m["input_name"];
  c.uint8 = m.count("input_dtype") && m["input_dtype"] == "uint8";
  // the decision is the graph's own ('label', 'in_distribution' outputs); the metadata says what to show instead
  if (!m.count("decision")) throw std::runtime_error("no 'label'/'in_distribution' outputs (exported before them): run skinonnx export again");
  auto words = json_strings(m["decision"]);  // {"label": "...", "in_distribution": "...", "refusal": "..."}
  for (size_t i = 0; i + 1 < words.size(); i += 2) if (words[i] == "refusal") c.refusal = words[i + 1];
  for (auto& name : json_strings(m["output_names"])) if (name == "p_malignant") c.malignancy = true;
  return c;
}

// ---- decoding ------------------------------------------------------------------------------------------

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open file");
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// EXIF Orientation (1..8) from a JPEG APP1 segment; 1 when absent or unreadable.
int exif_orientation(const jpeg_saved_marker_ptr markers) {
  for (auto m = markers; m; m = m->next) {
    if (m->marker != JPEG_APP0 + 1 || m->data_length < 14 || std::memcmp(m->data, "Exif\0\0", 6) != 0) continue;
    const uint8_t* t = m->data + 6;
    size_t n = m->data_length - 6;
    bool le = t[0] == 'I';
    auto u16 = [&](size_t o) { return o + 2 > n ? 0u : le ? t[o] | t[o + 1] << 8 : t[o] << 8 | t[o + 1]; };
    auto u32 = [&](size_t o) -> size_t { return o + 4 > n ? 0 : le ? (size_t)u16(o) | (size_t)u16(o + 2) << 16 : (size_t)u16(o) << 16 | u16(o + 2); };
    size_t ifd = u32(4);
    unsigned count = u16(ifd);
    for (unsigned i = 0; i < count; i++) {
      size_t e = ifd + 2 + 12 * i;
      if (u16(e) == 0x0112) { unsigned v = u16(e + 8); return v >= 1 && v <= 8 ? v : 1; }
    }
  }
  return 1;
}

struct JpegError { jpeg_error_mgr mgr; jmp_buf jump; char message[JMSG_LENGTH_MAX]; };

// Decode like Pillow with draft("RGB", (r, r)): libjpeg DCT scaling 1/a, a the largest of 8, 4, 2 with
// a <= min(W // r, H // r); default ISLOW IDCT and fancy upsampling. Returns the orientation too.
Image decode_jpeg(const std::vector<uint8_t>& bytes, int r, int* orientation) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = [](j_common_ptr ci) {
    auto* e = reinterpret_cast<JpegError*>(ci->err);
    (*ci->err->format_message)(ci, e->message);
    longjmp(e->jump, 1);
  };
  Image img;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw std::runtime_error(std::string("corrupt or truncated JPEG: ") + err.message);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, bytes.data(), bytes.size());
  jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xffff);
  jpeg_read_header(&cinfo, TRUE);
  if ((long long)cinfo.image_width * cinfo.image_height > kMaxPixels) throw std::runtime_error("more than 50 megapixels");
  int k = std::min(cinfo.image_width / r, cinfo.image_height / r);
  int a = k >= 8 ? 8 : k >= 4 ? 4 : k >= 2 ? 2 : 1;
  cinfo.scale_num = 1;
  cinfo.scale_denom = a;
  cinfo.out_color_space = JCS_RGB;  // greyscale is replicated; CMYK JPEGs are refused by libjpeg here
  *orientation = exif_orientation(cinfo.marker_list);
  jpeg_start_decompress(&cinfo);
  img.width = cinfo.output_width;
  img.height = cinfo.output_height;
  img.rgb.resize((size_t)img.width * img.height * 3);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = img.rgb.data() + (size_t)cinfo.output_scanline * img.width * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return img;
}

// PNG: 8-bit RGB; palette expanded, grey replicated, 16-bit scaled, alpha composited on white.
Image decode_png(const std::string& path) {
  png_image png;
  std::memset(&png, 0, sizeof png);
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&png, path.c_str())) throw std::runtime_error(std::string("PNG: ") + png.message);
  if ((long long)png.width * png.height > kMaxPixels) { png_image_free(&png); throw std::runtime_error("more than 50 megapixels"); }
  png.format = PNG_FORMAT_RGB;
  Image img;
  img.width = png.width;
  img.height = png.height;
  img.rgb.resize(PNG_IMAGE_SIZE(png));
  png_color white = {255, 255, 255};
  if (!png_image_finish_read(&png, &white, img.rgb.data(), 0, nullptr)) throw std::runtime_error(std::string("PNG: ") + png.message);
  return img;
}

// EXIF orientation -> upright (the same eight cases as Pillow's ImageOps.exif_transpose).
Image orient(const Image& in, int o) {
  if (o == 1) return in;
  bool swap = o >= 5;
  Image out;
  out.width = swap ? in.height : in.width;
  out.height = swap ? in.width : in.height;
  out.rgb.resize(in.rgb.size());
  for (int y = 0; y < out.height; y++) {
    for (int x = 0; x < out.width; x++) {
      int sx = 0, sy = 0, W = in.width, H = in.height;
      switch (o) {
        case 2: sx = W - 1 - x; sy = y; break;
        case 3: sx = W - 1 - x; sy = H - 1 - y; break;
        case 4: sx = x; sy = H - 1 - y; break;
        case 5: sx = y; sy = x; break;
        case 6: sx = y; sy = H - 1 - x; break;
        case 7: sx = W - 1 - y; sy = H - 1 - x; break;
        case 8: sx = W - 1 - y; sy = x; break;
      }
      std::memcpy(&out.rgb[((size_t)y * out.width + x) * 3], &in.rgb[((size_t)sy * W + sx) * 3], 3);
    }
  }
  return out;
}

Image decode(const std::string& path, int r) {
  auto bytes = read_file(path);
  if (bytes.empty()) throw std::runtime_error("empty file (0 bytes)");
  Image img;
  if (bytes.size() > 3 && bytes[0] == 0xff && bytes[1] == 0xd8 && bytes[2] == 0xff) {
    int o = 1;
    img = orient(decode_jpeg(bytes, r, &o), o);
  } else if (bytes.size() > 8 && std::memcmp(bytes.data(), "\x89PNG\r\n\x1a\n", 8) == 0) {
    img = decode_png(path);
  } else {
    throw std::runtime_error("not a supported image (this example reads JPEG and PNG)");
  }
  if (img.width < 8 || img.height < 8) throw std::runtime_error("image smaller than 8x8 pixels");
  return img;
}

// ---- Pillow's BILINEAR resize (src/libImaging/Resample.c), as in examples/node/pillow_resize.js -------

constexpr int kPrecisionBits = 32 - 8 - 2;

struct Coeffs { int ksize; std::vector<int> bounds; std::vector<int> weights; };

Coeffs precompute(int in_size, int out_size) {
  double scale = (double)in_size / out_size, filterscale = std::max(scale, 1.0), support = filterscale;
  Coeffs c{(int)std::ceil(support) * 2 + 1, std::vector<int>(out_size * 2), {}};
  c.weights.assign((size_t)out_size * c.ksize, 0);
  std::vector<double> k(c.ksize);
  for (int xx = 0; xx < out_size; xx++) {
    double center = (xx + 0.5) * scale, ss = 1.0 / filterscale, ww = 0;
    int xmin = std::max((int)(center - support + 0.5), 0);
    int xmax = std::min((int)(center + support + 0.5), in_size) - xmin;
    for (int x = 0; x < xmax; x++) {
      double t = std::fabs((x + xmin - center + 0.5) * ss);
      k[x] = t < 1 ? 1 - t : 0;
      ww += k[x];
    }
    for (int x = 0; x < xmax; x++) {
      double w = ww != 0 ? k[x] / ww : k[x];
      c.weights[(size_t)xx * c.ksize + x] = w < 0 ? (int)(-0.5 + w * (1 << kPrecisionBits)) : (int)(0.5 + w * (1 << kPrecisionBits));
    }
    c.bounds[xx * 2] = xmin;
    c.bounds[xx * 2 + 1] = xmax;
  }
  return c;
}

inline uint8_t clip8(long long v) {
  if (v >= (1LL << kPrecisionBits) * 256) return 255;
  if (v <= 0) return 0;
  return (uint8_t)(v >> kPrecisionBits);
}

Image resize_bilinear(const Image& in, int ow, int oh) {
  if (in.width == ow && in.height == oh) return in;
  Coeffs ch = precompute(in.width, ow), cv = precompute(in.height, oh);
  Image tmp = in;
  int row_shift = 0;
  if (in.width != ow) {  // horizontal pass over the rows the vertical pass will read
    int first = cv.bounds[0], last = cv.bounds[oh * 2 - 2] + cv.bounds[oh * 2 - 1];
    tmp.width = ow;
    tmp.height = last - first;
    tmp.rgb.assign((size_t)ow * tmp.height * 3, 0);
    for (int y = 0; y < tmp.height; y++) {
      for (int xx = 0; xx < ow; xx++) {
        long long s[3] = {1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1)};
        for (int x = 0; x < ch.bounds[xx * 2 + 1]; x++) {
          const uint8_t* p = &in.rgb[((size_t)(y + first) * in.width + x + ch.bounds[xx * 2]) * 3];
          int w = ch.weights[(size_t)xx * ch.ksize + x];
          for (int c = 0; c < 3; c++) s[c] += (long long)p[c] * w;
        }
        for (int c = 0; c < 3; c++) tmp.rgb[((size_t)y * ow + xx) * 3 + c] = clip8(s[c]);
      }
    }
    row_shift = first;
  }
  if (in.height == oh) return tmp;
  Image out;
  out.width = tmp.width;
  out.height = oh;
  out.rgb.assign((size_t)out.width * oh * 3, 0);
  for (int yy = 0; yy < oh; yy++) {
    int ymin = cv.bounds[yy * 2] - row_shift;
    for (int xx = 0; xx < out.width; xx++) {
      long long s[3] = {1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1)};
      for (int y = 0; y < cv.bounds[yy * 2 + 1]; y++) {
        const uint8_t* p = &tmp.rgb[((size_t)(y + ymin) * tmp.width + xx) * 3];
        int w = cv.weights[(size_t)yy * cv.ksize + y];
        for (int c = 0; c < 3; c++) s[c] += (long long)p[c] * w;
      }
      for (int c = 0; c < 3; c++) out.rgb[((size_t)yy * out.width + xx) * 3 + c] = clip8(s[c]);
    }
  }
  return out;
}

// Shorter side -> r (the longer side truncated, R * H first, in double), as in docs/EMBEDDING.md.
Image resize_shorter_side(const Image& in, int r) {
  int w = in.width, h = in.height;
  int ow = w <= h ? r : (int)((double)r * w / h), oh = w <= h ? (int)((double)r * h / w) : r;
  return resize_bilinear(in, ow, oh);
}

// Python's round() on (side - S) / 2: halves to even.
int crop_offset(int side, int s) {
  int d = side - s;
  return d / 2 + (d % 4 == 3 ? 1 : 0);
}

// Centre crop, then (x / 255 - mean) / std per channel, CHW. Computed as skinonnx's predict does it,
// x * scale + bias in float32 with scale = 1 / (255 std) and bias = -mean / std rounded once from double
// (the uint8 variant's graph uses the same constants), so the tensors are bit-identical to predict's.
// Build without FMA contraction (-ffp-contract=off) to keep the two roundings.
std::vector<float> normalize(const Image& img, const Contract& c) {
  int s = c.image_size, left = crop_offset(img.width, s), top = crop_offset(img.height, s);
  std::vector<float> out((size_t)3 * s * s);
  for (int ch = 0; ch < 3; ch++) {
    float scale = static_cast<float>(1.0 / (255.0 * c.std_[ch])), bias = static_cast<float>(-c.mean[ch] / c.std_[ch]);
    for (int y = 0; y < s; y++) {
      for (int x = 0; x < s; x++) {
        float v = static_cast<float>(img.rgb[((size_t)(top + y) * img.width + left + x) * 3 + ch]) * scale;
        out[((size_t)ch * s + y) * s + x] = v + bias;
      }
    }
  }
  return out;
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    if ((unsigned char)ch < 0x20) { char buf[8]; std::snprintf(buf, sizeof buf, "\\u%04x", ch); out += buf; continue; }
    out += ch;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0] << " MODEL.onnx IMAGE...\n";
    return 2;
  }
  try {
    Ort::Env env(ORT_LOGGING_LEVEL_ERROR, "skinonnx");
    Ort::SessionOptions options;
    options.SetIntraOpNumThreads(0);
    Ort::Session session(env, argv[1], options);
    Contract c = read_contract(session);
    Ort::AllocatorWithDefaultOptions alloc;
    if (session.GetInputNameAllocated(0, alloc).get() != c.input_name) throw std::runtime_error("graph input != metadata input_name");
    std::cerr << "model " << argv[1] << ": input '" << c.input_name << "' " << (c.uint8 ? "uint8 NHWC" : "float32 NCHW")
              << ", ONNX Runtime " << Ort::GetVersionString() << " (headers: API " << ORT_API_VERSION << ")\n";
    const char* input_names[] = {c.input_name.c_str()};
    const char* output_names[] = {"logits", "probabilities", "label", "in_distribution", "p_malignant", "malignant"};
    const size_t n_outputs = c.malignancy ? 6 : 4;
    auto memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    int classified = 0;
    for (int i = 2; i < argc; i++) {
      std::string path = argv[i];
      try {
        Image img = resize_shorter_side(decode(path, c.resize_size), c.resize_size);
        std::vector<float> x;
        Ort::Value input{nullptr};
        if (c.uint8) {  // the graph crops, scales and normalises
          int64_t shape[] = {1, img.height, img.width, 3};
          input = Ort::Value::CreateTensor<uint8_t>(memory, img.rgb.data(), img.rgb.size(), shape, 4);
        } else {
          x = normalize(img, c);
          int64_t shape[] = {1, 3, c.image_size, c.image_size};
          input = Ort::Value::CreateTensor<float>(memory, x.data(), x.size(), shape, 4);
        }
        auto out = session.Run(Ort::RunOptions{nullptr}, input_names, &input, 1, output_names, n_outputs);
        const float* logits = out[0].GetTensorData<float>();
        const float* p = out[1].GetTensorData<float>();
        const int64_t index = out[2].GetTensorData<int64_t>()[0];  // the file decides: no threshold compared here
        const bool in_distribution = out[3].GetTensorData<bool>()[0];
        const std::string& label = in_distribution ? c.classes.at(index) : c.refusal;
        std::printf("{\"path\": \"%s\", \"label\": \"%s\", \"in_distribution\": %s, \"probabilities\": {",
                    json_escape(path).c_str(), json_escape(label).c_str(), in_distribution ? "true" : "false");
        for (size_t k = 0; k < c.classes.size(); k++) {
          std::printf("%s\"%s\": %.9g", k ? ", " : "", json_escape(c.classes[k]).c_str(), p[k]);
        }
        std::printf("}, \"logits\": [");
        for (size_t k = 0; k < c.classes.size(); k++) std::printf("%s%.9g", k ? ", " : "", logits[k]);
        std::printf("]");
        if (c.malignancy) {  // the malignancy group's probability and the file's decision on it
          std::printf(", \"p_malignant\": %.9g, \"malignant\": %s", out[4].GetTensorData<float>()[0],
                      out[5].GetTensorData<bool>()[0] ? "true" : "false");
        }
        std::printf("}\n");
        classified++;
      } catch (const std::exception& e) {
        std::printf("{\"path\": \"%s\", \"error\": \"%s\"}\n", json_escape(path).c_str(), json_escape(e.what()).c_str());
      }
    }
    return classified ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
