/* fuzz_alrd: the .alrd reader (alrd_file_open), the .alrd source (factor
 * shapes against the lowrank section), the model loader and a tokenizer
 * from the stored vocab. Every byte of a .alrd file is CRC-covered, so a
 * mutated input mostly stops at a CRC check; each input is therefore tried
 * twice: as it is, and with every CRC it carries (tensors in an
 * uncompressed directory, sections, header) and file_size recomputed, so
 * the decoders behind the checksums are fuzzed too. */
#include "fuzz_util.h"

#include <zlib.h>

#include "../../formats/alrd_file.h"
#include "../../runtime/model.h"
#include "../../runtime/tokenizer.h"

static uint32_t al_get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t al_get64(const uint8_t *p) { return al_get32(p) | (uint64_t)al_get32(p + 4) << 32; }
static void al_put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void al_put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t al_crc(const uint8_t *p, size_t n) { return (uint32_t)crc32(crc32(0, Z_NULL, 0), p, (uInt)n); }

/* Rewrites the tensor CRCs in an uncompressed tensor directory at d[0, n). */
static void al_fix_tensors(uint8_t *d, size_t n, const uint8_t *file, size_t fsz, uint64_t data_off) {
    size_t pos = 4;
    if (n < 4) return;
    uint32_t count = al_get32(d);
    for (uint32_t i = 0; i < count && i < 4096; i++) {
        if (n - pos < 4) return;
        uint32_t len = al_get32(d + pos);
        if (len > n - pos - 4 || n - pos - 4 - len < 1 + 8) return;
        pos += 4 + (size_t)len + 1;
        uint32_t nd = al_get32(d + pos + 4);
        pos += 8;
        if (nd > 4 || (n - pos) < (size_t)nd * 8 + 4 + 8 + 8 + 4) return;
        pos += (size_t)nd * 8 + 4;
        uint64_t off = al_get64(d + pos), sz = al_get64(d + pos + 8);
        pos += 16;
        if (data_off <= fsz && off <= fsz - data_off && sz <= fsz - data_off - off)
            al_put32(d + pos, al_crc(file + data_off + off, (size_t)sz));
        pos += 4;
    }
}

/* Recomputes file_size, tensor, section and header CRCs in place. */
static void al_fix(uint8_t *p, size_t fsz) {
    if (fsz < 64 || memcmp(p, "ALRD", 4)) return;
    al_put64(p + 16, fsz);
    uint32_t ns = al_get32(p + 12);
    if (ns < 1 || ns > 16 || 64 + 40 * (size_t)ns > fsz) return;
    uint64_t data_off = al_get64(p + 24);
    for (uint32_t i = 0; i < ns; i++) {
        uint8_t *e = p + 64 + 40 * i;
        uint64_t off = al_get64(e + 8), size = al_get64(e + 16);
        if (off > fsz || size > fsz - off) continue;
        if (al_get32(e) == 4 && !(al_get32(e + 4) & 1)) al_fix_tensors(p + off, (size_t)size, p, fsz, data_off);
        al_put32(e + 32, al_crc(p + off, (size_t)size));
    }
    uint32_t hs = 64 + 40 * ns;
    uLong hc = crc32(0L, Z_NULL, 0);
    hc = crc32(hc, p, 60);
    hc = crc32(hc, p + 64, hs - 64);
    al_put32(p + 60, (uint32_t)hc);
}

static void al_one(const uint8_t *data, size_t size) {
    const char *path = fuzz_memfile(data, size);
    alrd_file f;
    alrd_error err = {{0}};
    int rc = alrd_file_open(&f, path, &err);
    fuzz_check_error(rc, &err);
    if (rc) return;
    for (int i = 0; i < f.n_tensors; i++) {
        const alrd_tensor *t = &f.tensors[i];
        FUZZ_CHECK((const uint8_t *)t->data >= f.map.data &&
                   (const uint8_t *)t->data + t->nbytes <= f.map.data + f.map.size);
    }
    alrd_tokenizer *tok = NULL;
    if (alrd_tokenizer_new(&tok, &f.vocab, &err) == 0) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (alrd_tokenizer_encode(tok, "a b<s>c", 7, 1, 1, &ids, &n, &err) == 0) {
            for (size_t i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < f.vocab.n_tokens);
            free(ids);
        }
        alrd_tokenizer_free(tok);
    }
    alrd_file_close(&f);

    alrd_source s;
    rc = alrd_source_open(&s, path, &err);
    fuzz_check_error(rc, &err);
    if (rc) return;
    const alrd_config *c = &s.config;
    if ((int64_t)c->vocab_size * c->hidden <= (1 << 16) && (int64_t)c->ffn * c->hidden <= (1 << 16) &&
        c->n_layers <= 4) {
        alrd_model m;
        rc = alrd_model_load(&m, &s, &err);
        fuzz_check_error(rc, &err);
        alrd_model_free(&m);
    }
    alrd_source_close(&s);
}

int fuzz_alrd(const uint8_t *data, size_t size) {
    al_one(data, size);
    if (size < 64 || memcmp(data, "ALRD", 4)) return 0;
    uint8_t *fixed = malloc(size);
    if (!fixed) abort();
    memcpy(fixed, data, size);
    al_fix(fixed, size);
    if (memcmp(fixed, data, size)) al_one(fixed, size);
    free(fixed);
    return 0;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_alrd(data, size); }
#endif
