/* Decoding-step products with 4-, 6- or 8-bit grouped weights and int8 activations.
 *
 * y[m, n] = sum over groups g of 32 inputs:
 *     scale[n, g] * dx[m, g] * sum_k q[n, k] * qx[m, k]  +  offset[n, g] * dx[m, g] * sum_k qx[m, k]
 * where w[n, k] = scale[n, g] * q[n, k] + offset[n, g] (q unsigned: 0..15 for 4 bits, 0..127 for 8)
 * and x[m, k] ~ dx[m, g] * qx[m, k] (qx in -127..127, one scale per group of 32: as llama.cpp's
 * Q8 activations).
 *
 * Weights are stored in blocks of 16 output rows x 32 inputs (one group), block after block along
 * the inputs, tile (16 rows) after tile:
 *   4-bit: 256 bytes of nibbles, then 16 fp16 scales, then 16 fp16 offsets (320 bytes).
 *          Chunk c (0..3) of 64 bytes holds, for row r, 4 bytes at 4r whose low nibbles are
 *          inputs 8c..8c+3 and high nibbles inputs 8c+4..8c+7.
 *   8-bit: 512 bytes (chunk j (0..7) of 64 bytes: row r's inputs 4j..4j+3 at 4r), then the scales
 *          and offsets (576 bytes).
 *   6-bit (GGUF Q6_K, exact): w = d[n, g] * sc[n, g, half] * (q - 32), q in 0..63, one int8 scale
 *          per 16 inputs (half) and the super-block's fp16 d. The low 4 bits of q as the 4-bit
 *          nibbles (256 bytes); then two 64-byte vectors of the high 2 bits, for inputs 0..15 and
 *          16..31: byte 4r+b of vector h holds, in bits 2j..2j+1, those of input 16h+4j+b of row r;
 *          then 16 fp16 d, 16 int8 scales of the first half, 16 of the second (448 bytes). The
 *          sum becomes, per half: d * sc * (dx * sum_k q * qx - 32 * dx * sum_k qx).
 * So one 64-byte load gives 16 rows x 4 inputs: one VNNI dot (vpdpbusd) per 4 inputs of 16 rows.
 * Built with -march=native on the machine that runs it (ragqa/generators/qgemv.py); OpenMP is
 * the one torch already loaded (same soname), so the threads are torch's.
 */
#include <stdint.h>
#include <string.h>
#include <math.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#define GROUP 32
#define TILE 16
#define MAX_M 8
#ifndef PREFETCH
#define PREFETCH 24  /* blocks ahead: 2x faster than none on a 2-core Xeon (7.7 KB of 4-bit blocks) */
#endif

static inline float fp16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, mant = h & 0x3FF, bits;
    if (exp == 0) {
        if (mant == 0) { bits = sign; }
        else { float f = ldexpf((float)mant, -24); memcpy(&bits, &f, 4); bits |= sign; }
    } else if (exp == 31) {
        bits = sign | 0x7F800000 | (mant << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    }
    float out; memcpy(&out, &bits, 4); return out;
}

static inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16; float out; memcpy(&out, &bits, 4); return out;
}

static inline uint16_t f32_to_bf16(float f) {
    uint32_t bits; memcpy(&bits, &f, 4);
    if ((bits & 0x7FFFFFFF) > 0x7F800000) return (uint16_t)((bits >> 16) | 0x40);  /* NaN */
    bits += 0x7FFF + ((bits >> 16) & 1);  /* round to nearest even */
    return (uint16_t)(bits >> 16);
}

/* element i of a bf16 (bf = 1) or float32 row, as a float; storing one; rounding as the dtype does */
static inline float ld(const void *p, size_t i, int bf) {
    return bf ? bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}
static inline void st(void *p, size_t i, float v, int bf) {
    if (bf) ((uint16_t *)p)[i] = f32_to_bf16(v); else ((float *)p)[i] = v;
}
static inline float rnd(float f, int bf) { return bf ? bf16_to_f32(f32_to_bf16(f)) : f; }

int qgemv_abi(void) { return 3; }

static inline size_t block_bytes(int bits) { return bits == 4 ? 320 : bits == 6 ? 448 : 576; }

/* What the build uses: 3 AVX512-VNNI, 2 AVX512BW, 1 AVX2, 0 portable C. */
int qgemv_isa(void) {
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
    return 3;
#elif defined(__AVX512BW__)
    return 2;
#elif defined(__AVX2__)
    return 1;
#else
    return 0;
#endif
}

/* x [m, k] (float32 or bf16) -> qx [m, k] int8, dx [m, k/32] and xs [m, k/32] = dx * sum(qx);
 * xh [m, k/32, 2]: dx * sum(qx) over each half of the group (the 6-bit blocks' offsets). */
static void quantize_rows(const void *x, int x_bf16, int m, int k, int8_t *qx, float *dx, float *xs,
                          float *xh) {
    int groups = k / GROUP;
    float tmp[GROUP];
    for (int i = 0; i < m; i++) {
        for (int g = 0; g < groups; g++) {
            float amax = 0.f;
            for (int j = 0; j < GROUP; j++) {
                size_t idx = (size_t)i * k + (size_t)g * GROUP + j;
                float v = ld(x, idx, x_bf16);
                tmp[j] = v;
                float a = fabsf(v);
                amax = a > amax ? a : amax;
            }
            float d = amax / 127.f, inv = d > 0.f ? 1.f / d : 0.f;
            int sum = 0, half = 0;
            int8_t *q = qx + (size_t)i * k + (size_t)g * GROUP;
            for (int j = 0; j < GROUP; j++) {
                int v = (int)lrintf(tmp[j] * inv);
                v = v > 127 ? 127 : v < -127 ? -127 : v;
                q[j] = (int8_t)v;
                sum += v;
                if (j == GROUP / 2 - 1) half = sum;
            }
            dx[(size_t)i * groups + g] = d;
            xs[(size_t)i * groups + g] = d * (float)sum;
            xh[2 * ((size_t)i * groups + g)] = d * (float)half;
            xh[2 * ((size_t)i * groups + g) + 1] = d * (float)(sum - half);
        }
    }
}

static inline void store_row(void *y, int y_bf16, size_t at, const float *v) {
    if (y_bf16) { for (int r = 0; r < TILE; r++) ((uint16_t *)y)[at + r] = f32_to_bf16(v[r]); }
    else { memcpy((float *)y + at, v, TILE * sizeof(float)); }
}

#if defined(__AVX512BW__) && defined(__AVX512VNNI__)
/* 16 rows x 32 inputs in eight vpdpbusd: the sums over inputs 0..15 (*da) and 16..31 (*db), in
 * two independent chains each (a chain of dependent vpdpbusd would wait on latency) */
static inline void vnni_halves(const __m512i w[8], const int32_t *x4, __m512i *da, __m512i *db) {
    __m512i d0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[0], _mm512_set1_epi32(x4[0]));
    __m512i d1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[1], _mm512_set1_epi32(x4[1]));
    __m512i e0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[4], _mm512_set1_epi32(x4[4]));
    __m512i e1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[5], _mm512_set1_epi32(x4[5]));
    d0 = _mm512_dpbusd_epi32(d0, w[2], _mm512_set1_epi32(x4[2]));
    d1 = _mm512_dpbusd_epi32(d1, w[3], _mm512_set1_epi32(x4[3]));
    e0 = _mm512_dpbusd_epi32(e0, w[6], _mm512_set1_epi32(x4[6]));
    e1 = _mm512_dpbusd_epi32(e1, w[7], _mm512_set1_epi32(x4[7]));
    *da = _mm512_add_epi32(d0, d1);
    *db = _mm512_add_epi32(e0, e1);
}
#endif

/* input j (0..31) of row r's low nibble in a 4- or 6-bit block (the layout above) */
static inline int nibble_at(const uint8_t *blk, int r, int j) {
    const uint8_t byte = blk[64 * (j / 8) + 4 * r + j % 4];
    return (j % 8) / 4 ? byte >> 4 : byte & 0x0F;
}

/* one tile (16 output rows) for m input rows: acc[i][r] */
static void tile_dot(const uint8_t *blk, int bits, int groups, int m, const int8_t *qx, int k,
                     const float *dx, const float *xs, const float *xh, float acc[MAX_M][TILE]) {
    const int wbytes = bits == 4 ? 256 : 512, bsize = (int)block_bytes(bits);
#if defined(__AVX512BW__)
    __m512 a[MAX_M];
    for (int i = 0; i < m; i++) a[i] = _mm512_setzero_ps();
    const __m512i low = _mm512_set1_epi8(0x0F);
#if !defined(__AVX512VNNI__)
    const __m512i ones = _mm512_set1_epi16(1);
#endif
    for (int g = 0; g < groups; g++, blk += bsize) {
        __m512i w[8];
        for (int c = 0; c < bsize; c += 64) _mm_prefetch((const char *)(blk + PREFETCH * bsize + c), _MM_HINT_T0);
        if (bits == 8) {
            for (int j = 0; j < 8; j++) w[j] = _mm512_loadu_si512((const void *)(blk + 64 * j));
        } else {  /* 4 and 6 bits: the low nibbles */
            for (int c = 0; c < 4; c++) {
                __m512i v = _mm512_loadu_si512((const void *)(blk + 64 * c));
                w[2 * c] = _mm512_and_si512(v, low);
                w[2 * c + 1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
            }
        }
        if (bits == 6) {
            const __m512i hb = _mm512_set1_epi8(0x30);
            for (int h = 0; h < 2; h++) {
                const __m512i v = _mm512_loadu_si512((const void *)(blk + 256 + 64 * h));
                w[4 * h] = _mm512_or_si512(w[4 * h], _mm512_and_si512(_mm512_slli_epi16(v, 4), hb));
                w[4 * h + 1] = _mm512_or_si512(w[4 * h + 1], _mm512_and_si512(_mm512_slli_epi16(v, 2), hb));
                w[4 * h + 2] = _mm512_or_si512(w[4 * h + 2], _mm512_and_si512(v, hb));
                w[4 * h + 3] = _mm512_or_si512(w[4 * h + 3], _mm512_and_si512(_mm512_srli_epi16(v, 2), hb));
            }
            const __m512 dd = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(blk + 384)));
            const __m512 sa = _mm512_mul_ps(dd, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 416)))));
            const __m512 sb = _mm512_mul_ps(dd, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 432)))));
            for (int i = 0; i < m; i++) {
                const int32_t *x4 = (const int32_t *)(qx + (size_t)i * k + (size_t)g * GROUP);
#if defined(__AVX512VNNI__)
                __m512i da, db;
                vnni_halves(w, x4, &da, &db);
#else
                /* two u8 x s8 pairs of 6-bit weights fit 16 bits (2 * 2 * 63 * 127) */
                const __m512i da = _mm512_add_epi32(
                    _mm512_madd_epi16(_mm512_add_epi16(_mm512_maddubs_epi16(w[0], _mm512_set1_epi32(x4[0])),
                                                       _mm512_maddubs_epi16(w[1], _mm512_set1_epi32(x4[1]))), ones),
                    _mm512_madd_epi16(_mm512_add_epi16(_mm512_maddubs_epi16(w[2], _mm512_set1_epi32(x4[2])),
                                                       _mm512_maddubs_epi16(w[3], _mm512_set1_epi32(x4[3]))), ones));
                const __m512i db = _mm512_add_epi32(
                    _mm512_madd_epi16(_mm512_add_epi16(_mm512_maddubs_epi16(w[4], _mm512_set1_epi32(x4[4])),
                                                       _mm512_maddubs_epi16(w[5], _mm512_set1_epi32(x4[5]))), ones),
                    _mm512_madd_epi16(_mm512_add_epi16(_mm512_maddubs_epi16(w[6], _mm512_set1_epi32(x4[6])),
                                                       _mm512_maddubs_epi16(w[7], _mm512_set1_epi32(x4[7]))), ones));
#endif
                const size_t at = (size_t)i * groups + g;
                const __m512 dg = _mm512_set1_ps(dx[at]);
                a[i] = _mm512_fmadd_ps(sa, _mm512_fmadd_ps(_mm512_cvtepi32_ps(da), dg, _mm512_set1_ps(-32.f * xh[2 * at])), a[i]);
                a[i] = _mm512_fmadd_ps(sb, _mm512_fmadd_ps(_mm512_cvtepi32_ps(db), dg, _mm512_set1_ps(-32.f * xh[2 * at + 1])), a[i]);
            }
            continue;
        }
        const __m512 sc = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(blk + wbytes)));
        const __m512 of = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(blk + wbytes + 32)));
        for (int i = 0; i < m; i++) {
            const int32_t *x4 = (const int32_t *)(qx + (size_t)i * k + (size_t)g * GROUP);
#if defined(__AVX512VNNI__)
            __m512i da, db;
            vnni_halves(w, x4, &da, &db);
            __m512i d = _mm512_add_epi32(da, db);
#else
            /* u8 x s8 pairs in 16 bits: 4-bit weights sum 8 pairs (<= 8 * 2 * 15 * 127) in 16 bits */
            __m512i d;
            if (bits == 4) {
                __m512i s = _mm512_maddubs_epi16(w[0], _mm512_set1_epi32(x4[0]));
                for (int j = 1; j < 8; j++) s = _mm512_add_epi16(s, _mm512_maddubs_epi16(w[j], _mm512_set1_epi32(x4[j])));
                d = _mm512_madd_epi16(s, ones);
            } else {
                d = _mm512_setzero_si512();
                for (int j = 0; j < 8; j++)
                    d = _mm512_add_epi32(d, _mm512_madd_epi16(_mm512_maddubs_epi16(w[j], _mm512_set1_epi32(x4[j])), ones));
            }
#endif
            const float dg = dx[(size_t)i * groups + g], sg = xs[(size_t)i * groups + g];
            a[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(sc, _mm512_set1_ps(dg)), a[i]);
            a[i] = _mm512_fmadd_ps(of, _mm512_set1_ps(sg), a[i]);
        }
    }
    for (int i = 0; i < m; i++) _mm512_storeu_ps(acc[i], a[i]);
#elif defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
    __m256 a[MAX_M][2];
    for (int i = 0; i < m; i++) a[i][0] = a[i][1] = _mm256_setzero_ps();
    const __m256i low = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    for (int g = 0; g < groups; g++, blk += bsize) {
        for (int c = 0; c < bsize; c += 64) _mm_prefetch((const char *)(blk + PREFETCH * bsize + c), _MM_HINT_T0);
        for (int h = 0; h < 2; h++) {  /* rows 0-7, then 8-15 */
            __m256i w[8];
            if (bits == 8) {
                for (int j = 0; j < 8; j++) w[j] = _mm256_loadu_si256((const __m256i *)(blk + 64 * j + 32 * h));
            } else {  /* 4 and 6 bits: the low nibbles */
                for (int c = 0; c < 4; c++) {
                    __m256i v = _mm256_loadu_si256((const __m256i *)(blk + 64 * c + 32 * h));
                    w[2 * c] = _mm256_and_si256(v, low);
                    w[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                }
            }
            if (bits == 6) {
                const __m256i hb = _mm256_set1_epi8(0x30);
                for (int e = 0; e < 2; e++) {
                    const __m256i v = _mm256_loadu_si256((const __m256i *)(blk + 256 + 64 * e + 32 * h));
                    w[4 * e] = _mm256_or_si256(w[4 * e], _mm256_and_si256(_mm256_slli_epi16(v, 4), hb));
                    w[4 * e + 1] = _mm256_or_si256(w[4 * e + 1], _mm256_and_si256(_mm256_slli_epi16(v, 2), hb));
                    w[4 * e + 2] = _mm256_or_si256(w[4 * e + 2], _mm256_and_si256(v, hb));
                    w[4 * e + 3] = _mm256_or_si256(w[4 * e + 3], _mm256_and_si256(_mm256_srli_epi16(v, 2), hb));
                }
                const __m256 dd = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 384 + 16 * h)));
                const __m256 sa = _mm256_mul_ps(dd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 416 + 8 * h)))));
                const __m256 sb = _mm256_mul_ps(dd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 432 + 8 * h)))));
                for (int i = 0; i < m; i++) {
                    const int32_t *x4 = (const int32_t *)(qx + (size_t)i * k + (size_t)g * GROUP);
                    /* two u8 x s8 pairs of 6-bit weights fit 16 bits (2 * 2 * 63 * 127) */
                    const __m256i da = _mm256_add_epi32(
                        _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(w[0], _mm256_set1_epi32(x4[0])),
                                                           _mm256_maddubs_epi16(w[1], _mm256_set1_epi32(x4[1]))), ones),
                        _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(w[2], _mm256_set1_epi32(x4[2])),
                                                           _mm256_maddubs_epi16(w[3], _mm256_set1_epi32(x4[3]))), ones));
                    const __m256i db = _mm256_add_epi32(
                        _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(w[4], _mm256_set1_epi32(x4[4])),
                                                           _mm256_maddubs_epi16(w[5], _mm256_set1_epi32(x4[5]))), ones),
                        _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(w[6], _mm256_set1_epi32(x4[6])),
                                                           _mm256_maddubs_epi16(w[7], _mm256_set1_epi32(x4[7]))), ones));
                    const size_t at = (size_t)i * groups + g;
                    const __m256 dg = _mm256_set1_ps(dx[at]);
                    a[i][h] = _mm256_fmadd_ps(sa, _mm256_fmadd_ps(_mm256_cvtepi32_ps(da), dg, _mm256_set1_ps(-32.f * xh[2 * at])), a[i][h]);
                    a[i][h] = _mm256_fmadd_ps(sb, _mm256_fmadd_ps(_mm256_cvtepi32_ps(db), dg, _mm256_set1_ps(-32.f * xh[2 * at + 1])), a[i][h]);
                }
                continue;
            }
            const __m256 sc = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + wbytes + 16 * h)));
            const __m256 of = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + wbytes + 32 + 16 * h)));
            for (int i = 0; i < m; i++) {
                const int32_t *x4 = (const int32_t *)(qx + (size_t)i * k + (size_t)g * GROUP);
                __m256i d;
                if (bits == 4) {
                    __m256i s = _mm256_maddubs_epi16(w[0], _mm256_set1_epi32(x4[0]));
                    for (int j = 1; j < 8; j++) s = _mm256_add_epi16(s, _mm256_maddubs_epi16(w[j], _mm256_set1_epi32(x4[j])));
                    d = _mm256_madd_epi16(s, ones);
                } else {
                    d = _mm256_setzero_si256();
                    for (int j = 0; j < 8; j++)
                        d = _mm256_add_epi32(d, _mm256_madd_epi16(_mm256_maddubs_epi16(w[j], _mm256_set1_epi32(x4[j])), ones));
                }
                const float dg = dx[(size_t)i * groups + g], sg = xs[(size_t)i * groups + g];
                a[i][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_mul_ps(sc, _mm256_set1_ps(dg)), a[i][h]);
                a[i][h] = _mm256_fmadd_ps(of, _mm256_set1_ps(sg), a[i][h]);
            }
        }
    }
    for (int i = 0; i < m; i++) { _mm256_storeu_ps(acc[i], a[i][0]); _mm256_storeu_ps(acc[i] + 8, a[i][1]); }
#else
    for (int i = 0; i < m; i++) for (int r = 0; r < TILE; r++) acc[i][r] = 0.f;
    for (int g = 0; g < groups; g++, blk += bsize) {
        if (bits == 6) {
            const uint16_t *dd = (const uint16_t *)(blk + 384);
            const int8_t *sc6 = (const int8_t *)(blk + 416);
            for (int i = 0; i < m; i++) {
                const int8_t *x = qx + (size_t)i * k + (size_t)g * GROUP;
                const size_t at = (size_t)i * groups + g;
                for (int r = 0; r < TILE; r++) {
                    int d[2] = {0, 0};
                    for (int j = 0; j < GROUP; j++) {
                        const int e = j / 16;
                        const int q = nibble_at(blk, r, j) | (((blk[256 + 64 * e + 4 * r + j % 4] >> (2 * ((j % 16) / 4))) & 3) << 4);
                        d[e] += q * x[j];
                    }
                    for (int e = 0; e < 2; e++) {
                        const float s6 = fp16_to_f32(dd[r]) * (float)sc6[16 * e + r];
                        acc[i][r] += s6 * ((float)d[e] * dx[at] - 32.f * xh[2 * at + e]);
                    }
                }
            }
            continue;
        }
        const uint16_t *sc = (const uint16_t *)(blk + wbytes), *of = sc + TILE;
        for (int i = 0; i < m; i++) {
            const int8_t *x = qx + (size_t)i * k + (size_t)g * GROUP;
            const float dg = dx[(size_t)i * groups + g], sg = xs[(size_t)i * groups + g];
            for (int r = 0; r < TILE; r++) {
                int d = 0;
                for (int j = 0; j < GROUP; j++) {
                    int q;
                    if (bits == 4) {
                        q = nibble_at(blk, r, j);
                    } else {
                        q = blk[64 * (j / 4) + 4 * r + j % 4];
                    }
                    d += q * x[j];
                }
                acc[i][r] += (float)d * fp16_to_f32(sc[r]) * dg + fp16_to_f32(of[r]) * sg;
            }
        }
    }
#endif
}

/* y [m, n] = x [m, k] @ W.T (+ bias [n], float32 or bf16 like y); returns 0, or -1 on bad sizes.
 * work: m * k bytes (rounded up to 64) + 4 * m * (k / 32) floats of scratch. */
int qgemv(const uint8_t *blocks, int bits, int n, int k, const void *x, int x_bf16, int m,
          void *y, int y_bf16, const void *bias, void *work, int threads) {
    if ((bits != 4 && bits != 6 && bits != 8) || n % TILE || k % GROUP || m < 1 || m > MAX_M) return -1;
    const int groups = k / GROUP, tiles = n / TILE;
    const size_t tile_bytes = block_bytes(bits) * (size_t)groups;
    int8_t *qx = (int8_t *)work;
    float *dx = (float *)((uint8_t *)work + (((size_t)m * k + 63) & ~(size_t)63));
    float *xs = dx + (size_t)m * groups, *xh = xs + (size_t)m * groups;
    quantize_rows(x, x_bf16, m, k, qx, dx, xs, xh);
    (void)threads;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads > 0 ? threads : 1)
#endif
    for (int t = 0; t < tiles; t++) {
        float acc[MAX_M][TILE];
        tile_dot(blocks + tile_bytes * (size_t)t, bits, groups, m, qx, k, dx, xs, xh, acc);
        for (int i = 0; i < m; i++) {
            if (bias) {
                for (int r = 0; r < TILE; r++) {
                    size_t at = (size_t)t * TILE + r;
                    acc[i][r] += ld(bias, at, y_bf16);
                }
            }
            store_row(y, y_bf16, (size_t)i * n + (size_t)t * TILE, acc[i]);
        }
    }
    return 0;
}

/* row r's 32 inputs qr (their low 4 bits) into a 4- or 6-bit block's nibbles (the layout above) */
static void put_nibbles(uint8_t *blk, int r, const uint8_t *qr) {
    for (int c = 0; c < 4; c++)
        for (int b = 0; b < 4; b++)
            blk[64 * c + 4 * r + b] = (uint8_t)((qr[8 * c + b] & 0x0F) | ((qr[8 * c + 4 + b] & 0x0F) << 4));
}

/* Packs q [n, k] (one weight a byte: 0..15 for bits 4, 0..127 for bits 8), scale and offset
 * [n, k / 32] (fp16 bits) into the block layout above. */
int qgemv_pack(const uint8_t *q, const uint16_t *scale, const uint16_t *offset, int bits, int n,
               int k, uint8_t *out) {
    if ((bits != 4 && bits != 8) || n % TILE || k % GROUP) return -1;
    const int groups = k / GROUP, wbytes = bits == 4 ? 256 : 512;
    const size_t bsize = block_bytes(bits);
    for (int t = 0; t < n / TILE; t++) {
        for (int g = 0; g < groups; g++) {
            uint8_t *blk = out + ((size_t)t * groups + g) * bsize;
            for (int r = 0; r < TILE; r++) {
                const uint8_t *row = q + (size_t)(t * TILE + r) * k + (size_t)g * GROUP;
                if (bits == 4) {
                    put_nibbles(blk, r, row);
                } else {
                    for (int j = 0; j < 8; j++)
                        for (int b = 0; b < 4; b++) blk[64 * j + 4 * r + b] = row[4 * j + b];
                }
                size_t at = (size_t)(t * TILE + r) * groups + g;
                memcpy(blk + wbytes + 2 * r, scale + at, 2);
                memcpy(blk + wbytes + 32 + 2 * r, offset + at, 2);
            }
        }
    }
    return 0;
}

/* Packs q [n, k] (0..63), d [n, k / 32] (fp16 bits, each group's super-block d) and sc [n, k / 16]
 * (int8, one per 16 inputs) into the 6-bit block layout above. */
int qgemv_pack6(const uint8_t *q, const uint16_t *d, const int8_t *sc, int n, int k, uint8_t *out) {
    if (n % TILE || k % GROUP) return -1;
    const int groups = k / GROUP;
    const size_t bsize = block_bytes(6);
    for (int t = 0; t < n / TILE; t++) {
        for (int g = 0; g < groups; g++) {
            uint8_t *blk = out + ((size_t)t * groups + g) * bsize;
            memset(blk + 256, 0, 128);
            for (int r = 0; r < TILE; r++) {
                const size_t row = (size_t)(t * TILE + r);
                const uint8_t *qr = q + row * k + (size_t)g * GROUP;
                put_nibbles(blk, r, qr);
                for (int e = 0; e < 2; e++)
                    for (int jj = 0; jj < 4; jj++)
                        for (int b = 0; b < 4; b++)
                            blk[256 + 64 * e + 4 * r + b] |= (uint8_t)(((qr[16 * e + 4 * jj + b] >> 4) & 3) << (2 * jj));
                memcpy(blk + 384 + 2 * r, d + row * groups + g, 2);
                blk[416 + r] = (uint8_t)sc[row * (k / 16) + 2 * (size_t)g];
                blk[432 + r] = (uint8_t)sc[row * (k / 16) + 2 * (size_t)g + 1];
            }
        }
    }
    return 0;
}

/* ---- A whole decoding step of one decoder layer (batch 1, one new token) ----
 * Llama / Qwen2 layers as transformers computes them, rounding every intermediate to the model's
 * dtype where PyTorch does (bf16: each product, sum, norm and activation; float32: none), so that
 * only the order of float32 sums differs from transformers' own path:
 *   x = rms(h) * ln1;  q, k, v = x Wq, x Wk, x Wv (+ bias);  rotary on q and k;  k, v -> the cache
 *   at slot pos;  a = softmax(q k^T * scaling) v (float32, grouped heads);  h += a Wo;
 *   x = rms(h) * ln2;  h += (silu(x Wg) * (x Wu)) Wd.
 * The projections go through qgemv (the blocks above). */


/* transformers' RMSNorm: float32 mean of squares, x * rsqrt(var + eps) in the dtype, times w */
static void rms_row(const void *h, const void *w, int n, float eps, int bf, void *out) {
    float part[16] = {0};
    const int n16 = n & ~15;
    for (int i = 0; i < n16; i += 16)
        for (int l = 0; l < 16; l++) { float v = ld(h, (size_t)i + l, bf); part[l] += v * v; }
    for (int i = n16; i < n; i++) { float v = ld(h, i, bf); part[i - n16] += v * v; }
    float sum = 0.f;
    for (int l = 0; l < 16; l++) sum += part[l];
    float r = 1.f / sqrtf(sum / (float)n + eps);
    for (int i = 0; i < n; i++) st(out, i, ld(w, i, bf) * rnd(ld(h, i, bf) * r, bf), bf);
}

/* q * cos + rotate_half(q) * sin for one head, each product and the sum rounded to the dtype */
static void rope(const void *x, size_t at, const void *cs, const void *sn, int d, int bf, float *out) {
    int half = d / 2;
    for (int i = 0; i < d; i++) {
        float xi = ld(x, at + i, bf), r = i < half ? -ld(x, at + i + half, bf) : ld(x, at + i - half, bf);
        out[i] = rnd(rnd(xi * ld(cs, i, bf), bf) + rnd(r * ld(sn, i, bf), bf), bf);
    }
}

#define MAX_HEAD_DIM 512
#define MAX_CHUNKS 8

static inline void load_row(const void *src, size_t at, int d, int bf, float *dst) {
    if (bf) { const uint16_t *r = (const uint16_t *)src + at; for (int i = 0; i < d; i++) dst[i] = bf16_to_f32(r[i]); }
    else memcpy(dst, (const float *)src + at, (size_t)d * sizeof(float));
}

/* The sum of 16 partial sums as a tree (4 dependent adds, not 16 in a row) */
static inline float sum16(float part[16]) {
    for (int w = 8; w > 0; w /= 2)
        for (int l = 0; l < w; l++) part[l] += part[l + w];
    return part[0];
}

/* a . b in float32: two vector accumulators, then one horizontal sum (the portable loop keeps
 * its 16 partial sums in memory and adds them up one by one) */
static inline float dot_row(const float *a, const float *b, int d) {
#if defined(__AVX512F__)
    if ((d & 15) == 0) {
        __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
        int i = 0;
        for (; i + 32 <= d; i += 32) {
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
            s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        }
        if (i < d) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
    }
#elif defined(__AVX2__) && defined(__FMA__)
    if ((d & 7) == 0) {
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        int i = 0;
        for (; i + 16 <= d; i += 16) {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        }
        if (i < d) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        __m256 t = _mm256_add_ps(s0, s1);
        __m128 x = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
        x = _mm_add_ps(x, _mm_movehl_ps(x, x));
        x = _mm_add_ss(x, _mm_movehdup_ps(x));
        return _mm_cvtss_f32(x);
    }
#endif
    float part[16] = {0};
    const int d16 = d & ~15;
    for (int i = 0; i < d16; i += 16) for (int l = 0; l < 16; l++) part[l] += a[i + l] * b[i + l];
    for (int i = d16; i < d; i++) part[i - d16] += a[i] * b[i];
    return sum16(part);
}

/* exp(v) for v in [-87.3, 88.3] (clamped): Cephes' expf (range reduction by ln 2, a degree-5
 * polynomial; within 2 ulp of expf), written so that the compiler vectorizes the loops that use
 * it (which GCC does only without errno and trap semantics: no effect on the values). */
#if defined(__GNUC__) && !defined(__clang__)
#define VECTOR_MATH __attribute__((optimize("no-math-errno", "no-trapping-math")))
#else
#define VECTOR_MATH
#endif
VECTOR_MATH static inline float exp_poly(float v) {
    v = v < -87.3f ? -87.3f : v > 88.3f ? 88.3f : v;
    float fn = floorf(v * 1.44269504088896341f + 0.5f);
    float r = v - fn * 0.693359375f + fn * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.f;
    int32_t e = ((int32_t)fn + 127) << 23;
    float scale;
    memcpy(&scale, &e, 4);
    return p * scale;
}

/* bf16_to_f32 and f32_to_bf16 for the loops below (GCC inlines only functions of the same
 * options), the latter without branches, so that those loops vectorize */
VECTOR_MATH static inline float bf16_widen(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

VECTOR_MATH static inline uint16_t bf16_select(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    uint32_t rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16, nan = (bits >> 16) | 0x40;
    return (uint16_t)((bits & 0x7FFFFFFF) > 0x7F800000 ? nan : rounded);
}

/* x[i] = exp(x[i] - m) and their sum */
VECTOR_MATH static float exp_shift(float *x, int n, float m) {
    for (int i = 0; i < n; i++) x[i] = exp_poly(x[i] - m);
    float part[16] = {0}, sum = 0.f;
    const int n16 = n & ~15;
    for (int i = 0; i < n16; i += 16) for (int l = 0; l < 16; l++) part[l] += x[i + l];
    for (int i = n16; i < n; i++) part[i - n16] += x[i];
    for (int l = 0; l < 16; l++) sum += part[l];
    return sum;
}

/* m = act_fn(g) * u as transformers' Llama / Qwen2 MLP computes it: silu(g) = g / (1 + exp(-g))
 * rounded to the dtype, times u, rounded */
VECTOR_MATH static void silu_mul(const void *g, const void *u, int n, int bf, void *m) {
    if (bf) {
        const uint16_t *g16 = (const uint16_t *)g, *u16 = (const uint16_t *)u;
        uint16_t *m16 = (uint16_t *)m;
        for (int i = 0; i < n; i++) {
            float gi = bf16_widen(g16[i]);
            m16[i] = bf16_select(bf16_widen(bf16_select(gi / (1.f + exp_poly(-gi)))) * bf16_widen(u16[i]));
        }
    } else {
        const float *gf = (const float *)g, *uf = (const float *)u;
        float *mf = (float *)m;
        for (int i = 0; i < n; i++) mf[i] = gf[i] / (1.f + exp_poly(-gf[i])) * uf[i];
    }
}

/* acc[d] += sum over t < nb of e[t] * rows[t][d] (rows float32 [nb][d]): the accumulators stay in
 * registers for a block of rows (the portable loop loads and stores acc for every row) */
static void axpy_rows(float *acc, const float *e, const float *rows, int nb, int d) {
#if defined(__AVX512F__)
    if ((d & 15) == 0) {
        int i0 = 0;
        for (; i0 + 64 <= d; i0 += 64) {
            __m512 r0 = _mm512_loadu_ps(acc + i0), r1 = _mm512_loadu_ps(acc + i0 + 16);
            __m512 r2 = _mm512_loadu_ps(acc + i0 + 32), r3 = _mm512_loadu_ps(acc + i0 + 48);
            for (int t = 0; t < nb; t++) {
                const float *v = rows + (size_t)t * d + i0;
                __m512 et = _mm512_set1_ps(e[t]);
                r0 = _mm512_fmadd_ps(et, _mm512_loadu_ps(v), r0);
                r1 = _mm512_fmadd_ps(et, _mm512_loadu_ps(v + 16), r1);
                r2 = _mm512_fmadd_ps(et, _mm512_loadu_ps(v + 32), r2);
                r3 = _mm512_fmadd_ps(et, _mm512_loadu_ps(v + 48), r3);
            }
            _mm512_storeu_ps(acc + i0, r0); _mm512_storeu_ps(acc + i0 + 16, r1);
            _mm512_storeu_ps(acc + i0 + 32, r2); _mm512_storeu_ps(acc + i0 + 48, r3);
        }
        for (; i0 < d; i0 += 16) {
            __m512 r = _mm512_loadu_ps(acc + i0);
            for (int t = 0; t < nb; t++) r = _mm512_fmadd_ps(_mm512_set1_ps(e[t]), _mm512_loadu_ps(rows + (size_t)t * d + i0), r);
            _mm512_storeu_ps(acc + i0, r);
        }
        return;
    }
#elif defined(__AVX2__) && defined(__FMA__)
    if ((d & 7) == 0) {
        int i0 = 0;
        for (; i0 + 32 <= d; i0 += 32) {
            __m256 r0 = _mm256_loadu_ps(acc + i0), r1 = _mm256_loadu_ps(acc + i0 + 8);
            __m256 r2 = _mm256_loadu_ps(acc + i0 + 16), r3 = _mm256_loadu_ps(acc + i0 + 24);
            for (int t = 0; t < nb; t++) {
                const float *v = rows + (size_t)t * d + i0;
                __m256 et = _mm256_set1_ps(e[t]);
                r0 = _mm256_fmadd_ps(et, _mm256_loadu_ps(v), r0);
                r1 = _mm256_fmadd_ps(et, _mm256_loadu_ps(v + 8), r1);
                r2 = _mm256_fmadd_ps(et, _mm256_loadu_ps(v + 16), r2);
                r3 = _mm256_fmadd_ps(et, _mm256_loadu_ps(v + 24), r3);
            }
            _mm256_storeu_ps(acc + i0, r0); _mm256_storeu_ps(acc + i0 + 8, r1);
            _mm256_storeu_ps(acc + i0 + 16, r2); _mm256_storeu_ps(acc + i0 + 24, r3);
        }
        for (; i0 < d; i0 += 8) {
            __m256 r = _mm256_loadu_ps(acc + i0);
            for (int t = 0; t < nb; t++) r = _mm256_fmadd_ps(_mm256_set1_ps(e[t]), _mm256_loadu_ps(rows + (size_t)t * d + i0), r);
            _mm256_storeu_ps(acc + i0, r);
        }
        return;
    }
#endif
    for (int t = 0; t < nb; t++)
        for (int i = 0; i < d; i++) acc[i] += e[t] * rows[(size_t)t * d + i];
}

#define PV_BLOCK 8

/* The pieces attend_one splits a cache of n slots into for `threads` threads (per kv head). */
static int attend_chunks(int kv, int n, int threads) {
    int c = threads > kv ? (threads + kv - 1) / kv : 1;
    c = c > MAX_CHUNKS ? MAX_CHUNKS : c;
    return c > n ? n : c;
}

/* The floats of work attend_one needs for a cache of `cap` slots. */
size_t attend_one_scratch(int heads, int d, int cap) {
    return (size_t)heads * d + (size_t)heads * MAX_CHUNKS * (d + 2) + (size_t)heads * ((size_t)cap + MAX_CHUNKS);
}

/* One token's attention: rotary on q [heads * d] and k [kv * d]; k and v written to the caches
 * kc, vc [kv][cap][d] at slot pos; out [heads * d] = softmax(q k^T * scaling) v over slots
 * 0..pos (float32, head h reading kv head h / (heads / kv), as transformers' repeat_kv orders
 * them). Each thread takes one kv head's slots, or a piece of them, for all the heads that read it
 * (each cache row is read once a step); the pieces' softmaxes are joined at the end, as
 * flash-decoding does. work: attend_one_scratch() floats. Returns 0, or -1 on sizes it does not
 * take. */
int attend_one(const void *q, const void *k, const void *v, const void *cs, const void *sn, int bf,
               int heads, int kv, int d, void *kc, void *vc, int cap, int pos, float scaling,
               void *out, float *work, int threads) {
    if (pos < 0 || pos >= cap || kv < 1 || heads % kv || d > MAX_HEAD_DIM || d % 2 || heads / kv > 64) return -1;
    const int n = pos + 1, groups = heads / kv, chunks = attend_chunks(kv, n, threads > 0 ? threads : 1);
    const int per = (n + chunks - 1) / chunks;
    float *qr = work, *part = qr + (size_t)heads * d, *scores = part + (size_t)heads * chunks * (d + 2);
    float tmp[MAX_HEAD_DIM];
    for (int j = 0; j < kv; j++) {
        size_t slot = ((size_t)j * cap + pos) * d;
        rope(k, (size_t)j * d, cs, sn, d, bf, tmp);
        for (int i = 0; i < d; i++) { st(kc, slot + i, tmp[i], bf); st(vc, slot + i, ld(v, (size_t)j * d + i, bf), bf); }
    }
    for (int hd = 0; hd < heads; hd++) rope(q, (size_t)hd * d, cs, sn, d, bf, qr + (size_t)hd * d);
    (void)threads;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads > 0 ? threads : 1)
#endif
    for (int task = 0; task < kv * chunks; task++) {
        const int j = task / chunks, c = task % chunks, t0 = c * per, t1 = t0 + per < n ? t0 + per : n;
        float row[MAX_HEAD_DIM], mx[64], sum[64];
        float *s = scores + (size_t)task * groups * per;
        const float *qj = qr + (size_t)j * groups * d;
        for (int g = 0; g < groups; g++) mx[g] = -INFINITY;
        for (int t = t0; t < t1; t++) {
            load_row(kc, ((size_t)j * cap + t) * d, d, bf, row);
            for (int g = 0; g < groups; g++) {
                float x = dot_row(qj + (size_t)g * d, row, d) * scaling;
                s[(size_t)g * per + (t - t0)] = x;
                mx[g] = x > mx[g] ? x : mx[g];
            }
        }
        float *acc = part + (size_t)task * groups * (d + 2);
        memset(acc, 0, (size_t)groups * (d + 2) * sizeof(float));
        for (int g = 0; g < groups; g++) sum[g] = exp_shift(s + (size_t)g * per, t1 - t0, mx[g]);
        float rows[PV_BLOCK * MAX_HEAD_DIM];
        for (int b = t0; b < t1; b += PV_BLOCK) {  /* a block of value rows, read once for every head */
            const int nb = t1 - b < PV_BLOCK ? t1 - b : PV_BLOCK;
            for (int t = 0; t < nb; t++) load_row(vc, ((size_t)j * cap + b + t) * d, d, bf, rows + (size_t)t * d);
            for (int g = 0; g < groups; g++)
                axpy_rows(acc + (size_t)g * (d + 2), s + (size_t)g * per + (b - t0), rows, nb, d);
        }
        for (int g = 0; g < groups; g++) { acc[(size_t)g * (d + 2) + d] = mx[g]; acc[(size_t)g * (d + 2) + d + 1] = sum[g]; }
    }
    for (int hd = 0; hd < heads; hd++) {  /* join the pieces: softmax over all n slots */
        const int j = hd / groups, g = hd % groups;
        float m = -INFINITY, total = 0.f, w[MAX_CHUNKS];
        for (int c = 0; c < chunks; c++) {
            const float *a = part + ((size_t)(j * chunks + c) * groups + g) * (d + 2);
            m = a[d] > m ? a[d] : m;
        }
        for (int c = 0; c < chunks; c++) {
            const float *a = part + ((size_t)(j * chunks + c) * groups + g) * (d + 2);
            w[c] = expf(a[d] - m);
            total += w[c] * a[d + 1];
        }
        for (int i = 0; i < d; i++) {
            float x = 0.f;
            for (int c = 0; c < chunks; c++) x += w[c] * part[((size_t)(j * chunks + c) * groups + g) * (d + 2) + i];
            st(out, (size_t)hd * d + i, x / total, bf);
        }
    }
    return 0;
}

/* 64-byte aligned room for `floats` 4-byte values at *p (then past it) */
static void *take(uint8_t **p, size_t floats) {
    void *at = *p;
    *p += (floats * 4 + 63) & ~(size_t)63;
    return at;
}

/* The scratch decode_layer needs, in bytes. */
size_t decode_layer_scratch(int hidden, int heads, int kv, int d, int inter, int cap) {
    size_t widest = (size_t)(inter > hidden ? inter : hidden);
    if ((size_t)heads * d > widest) widest = (size_t)heads * d;
    size_t floats = 2 * (size_t)hidden + 2 * (size_t)heads * d + 2 * (size_t)kv * d + 3 * (size_t)inter
                    + attend_one_scratch(heads, d, cap);
    return floats * 4 + 11 * 64 + widest + 64 + 16 * (widest / GROUP) + 64;
}

/* One decoder layer for one token, h [hidden] updated in place. w: the blocks of q, k, v, o,
 * gate, up, down, then the two norms' weights (dtype); bits and bias: the 7 projections' (bias
 * NULL where none); kc, vc: this layer's caches (attend_one). scratch: decode_layer_scratch()
 * bytes. Returns 0, or -1 on sizes it does not take. */
int decode_layer(void *h, int bf, int hidden, int heads, int kv, int d, int inter,
                 const void **w, const int *bits, const void **bias, float eps,
                 const void *cs, const void *sn, void *kc, void *vc, int cap, int pos, float scaling,
                 void *scratch, int threads) {
    if (hidden % GROUP || inter % GROUP || (heads * d) % GROUP || pos >= cap) return -1;
    uint8_t *p = (uint8_t *)((((uintptr_t)scratch) + 63) & ~(uintptr_t)63);
    const int qd = heads * d, kd = kv * d;
    void *x = take(&p, hidden), *y = take(&p, hidden), *q = take(&p, qd), *a = take(&p, qd);
    void *kk = take(&p, kd), *vv = take(&p, kd);
    void *g = take(&p, inter), *u = take(&p, inter), *m = take(&p, inter);
    float *att = (float *)take(&p, attend_one_scratch(heads, d, cap));
    void *work = p;
    rms_row(h, w[7], hidden, eps, bf, x);
    if (qgemv(w[0], bits[0], qd, hidden, x, bf, 1, q, bf, bias[0], work, threads)
        || qgemv(w[1], bits[1], kd, hidden, x, bf, 1, kk, bf, bias[1], work, threads)
        || qgemv(w[2], bits[2], kd, hidden, x, bf, 1, vv, bf, bias[2], work, threads)
        || attend_one(q, kk, vv, cs, sn, bf, heads, kv, d, kc, vc, cap, pos, scaling, a, att, threads)
        || qgemv(w[3], bits[3], hidden, qd, a, bf, 1, y, bf, bias[3], work, threads)) return -1;
    for (int i = 0; i < hidden; i++) st(h, i, ld(h, i, bf) + ld(y, i, bf), bf);
    rms_row(h, w[8], hidden, eps, bf, x);
    if (qgemv(w[4], bits[4], inter, hidden, x, bf, 1, g, bf, bias[4], work, threads)
        || qgemv(w[5], bits[5], inter, hidden, x, bf, 1, u, bf, bias[5], work, threads)) return -1;
    silu_mul(g, u, inter, bf, m);
    if (qgemv(w[6], bits[6], hidden, inter, m, bf, 1, y, bf, bias[6], work, threads)) return -1;
    for (int i = 0; i < hidden; i++) st(h, i, ld(h, i, bf) + ld(y, i, bf), bf);
    return 0;
}
