// Runs the cost-volume CUDA kernels' source on the CPU, one "thread" after another, so that their index arithmetic
// can be tested on machines without a GPU (tests/test_correlation_kernel_on_cpu.py). The test prepends the kernel
// source, with the two float16 conversions (inline PTX) replaced by host code, and the definitions below.
//
// usage: driver KERNEL DTYPE B C H W IN_A IN_B OUT
//   KERNEL 0 forward (a = first, b = second), 1 grad of first (a = grad_out, b = second),
//          2 grad of second (a = grad_out, b = first); DTYPE 0 float64, 1 float32, 2 float16. Files hold raw arrays.

#include <cstdio>
#include <cstdlib>
#include <vector>

template <typename T>
static std::vector<T> read_array(const char* path, long long count) {
    std::vector<T> values(count);
    FILE* file = std::fopen(path, "rb");
    if (!file || std::fread(values.data(), sizeof(T), count, file) != (size_t)count) std::exit(3);
    std::fclose(file);
    return values;
}

template <typename T>
static int run(int which, int batch, int channels, int height, int width, char** paths) {
    const long long features = (long long)batch * channels * height * width;
    const long long volume = (long long)batch * 81 * height * width;
    const long long a_count = which == 0 ? features : volume;
    const long long out_count = which == 0 ? volume : features;
    const long long threads = which == 0 ? (long long)batch * 9 * height * width : features;
    std::vector<T> a = read_array<T>(paths[0], a_count), b = read_array<T>(paths[1], features), out(out_count);
    void (*kernel)(const T*, const T*, T*, int, int, int, int) =
        which == 0 ? cost_volume_forward<T, 4> : which == 1 ? cost_volume_backward_first<T, 4>
                                                            : cost_volume_backward_second<T, 4>;
    blockDim.x = 256;
    for (long long thread = 0; thread < (threads + 255) / 256 * 256; ++thread) {
        blockIdx.x = thread / 256;
        threadIdx.x = thread % 256;
        kernel(a.data(), b.data(), out.data(), batch, channels, height, width);
    }
    FILE* file = std::fopen(paths[2], "wb");
    if (!file || std::fwrite(out.data(), sizeof(T), out_count, file) != (size_t)out_count) return 4;
    std::fclose(file);
    return 0;
}

int main(int argc, char** argv) {
    if (argc != 10) return 2;
    const int which = std::atoi(argv[1]), dtype = std::atoi(argv[2]);
    const int batch = std::atoi(argv[3]), channels = std::atoi(argv[4]);
    const int height = std::atoi(argv[5]), width = std::atoi(argv[6]);
    if (dtype == 0) return run<double>(which, batch, channels, height, width, argv + 7);
    if (dtype == 1) return run<float>(which, batch, channels, height, width, argv + 7);
    return run<half_bits>(which, batch, channels, height, width, argv + 7);
}
