/* fp32 FMA peak probe: each thread runs 12 independent AVX2 FMA chains (enough to hide the
 * FMA latency on two pipes), so the loop is bound by FMA throughput alone. Prints GFLOP/s
 * (best of 5) for the thread count given as argv[1]. Built and run by benchmarks/peak.py. */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define CHAINS 12

static double once(long iters, int threads) {
    float sink = 0.0f;
    double start = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    {
        __m256 acc[CHAINS];
        const __m256 mul = _mm256_set1_ps(0.999999f), add = _mm256_set1_ps(1e-7f);
        for (int c = 0; c < CHAINS; c++) acc[c] = _mm256_set1_ps((float)(c + omp_get_thread_num()));
        for (long i = 0; i < iters; i++) {
#pragma GCC unroll 12
            for (int c = 0; c < CHAINS; c++) acc[c] = _mm256_fmadd_ps(acc[c], mul, add);
        }
        float out[8];
        for (int c = 1; c < CHAINS; c++) acc[0] = _mm256_add_ps(acc[0], acc[c]);
        _mm256_storeu_ps(out, acc[0]);
        sink += out[0];
    }
    double seconds = omp_get_wtime() - start;
    if (sink == 42.0f) printf("#");  /* keep the result alive */
    return 2.0 * 8 * CHAINS * (double)iters * threads / seconds / 1e9;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    long iters = argc > 2 ? atol(argv[2]) : 20000000L;
    double best = 0.0;
    once(iters / 10, threads);
    for (int r = 0; r < 5; r++) {
        double g = once(iters, threads);
        if (g > best) best = g;
    }
    printf("%.2f\n", best);
    return 0;
}
