/* fuzz_safetensors: the .safetensors reader (header JSON + data), row
 * conversion of what it accepts, and the HF directory source around it
 * (fixed tiny config.json + tokenizer.json, the input as model.safetensors).
 * An input starting with '{' is a model.safetensors.index.json instead,
 * next to two fixed shards a.safetensors ("x") and b.safetensors ("y"). */
#include "fuzz_util.h"

#include "../../formats/safetensors.h"
#include "../../formats/source.h"
#include "../../runtime/model.h"

static const char ST_CONFIG[] =
    "{\"model_type\": \"llama\", \"num_hidden_layers\": 1, \"hidden_size\": 8,"
    " \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"intermediate_size\": 16,"
    " \"vocab_size\": 8, \"rms_norm_eps\": 1e-5, \"tie_word_embeddings\": true}";
static const char ST_TOKENIZER[] =
    "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"\\u0120\": 3},"
    " \"merges\": [\"a b\"]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false},"
    " \"added_tokens\": [{\"id\": 4, \"content\": \"<s>\", \"special\": true}]}";

/* A one-tensor F32 file: NAME shape [2]. */
static void st_shard(const char *path, const char *name) {
    char hdr[128];
    int n = snprintf(hdr, sizeof hdr,
                     "{\"%s\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", name);
    uint8_t buf[256] = {0};
    buf[0] = (uint8_t)n;
    memcpy(buf + 8, hdr, (size_t)n);
    float v[2] = {1.5f, -2.0f};
    memcpy(buf + 8 + n, v, 8);
    fuzz_put_file(path, buf, 8 + (size_t)n + 8);
}

static const char *st_dirs(int which) {
    static char hf[256], idx[256];
    if (!hf[0]) {
        char p[400];
        snprintf(hf, sizeof hf, "%s/hf", fuzz_dir());
        snprintf(idx, sizeof idx, "%s/idx", fuzz_dir());
        mkdir(hf, 0700);
        mkdir(idx, 0700);
        snprintf(p, sizeof p, "%s/config.json", hf);
        fuzz_put_file(p, (const uint8_t *)ST_CONFIG, sizeof ST_CONFIG - 1);
        snprintf(p, sizeof p, "%s/tokenizer.json", hf);
        fuzz_put_file(p, (const uint8_t *)ST_TOKENIZER, sizeof ST_TOKENIZER - 1);
        snprintf(p, sizeof p, "%s/a.safetensors", idx);
        st_shard(p, "x");
        snprintf(p, sizeof p, "%s/b.safetensors", idx);
        st_shard(p, "y");
    }
    return which ? idx : hf;
}

static void st_rows(const alrd_tensor *ts, int n) {
    for (int i = 0; i < n && i < 16; i++) {
        int64_t numel = alrd_tensor_numel(&ts[i]);
        if (numel <= 0 || numel > (1 << 16)) continue;
        float *f = malloc((size_t)numel * sizeof *f);
        if (!f) abort();
        alrd_error err = {{0}};
        fuzz_check_error(alrd_tensor_to_f32(&ts[i], f, &err), &err);
        free(f);
    }
}

int fuzz_safetensors(const uint8_t *data, size_t size) {
    alrd_error err = {{0}};
    int rc;
    if (size > 0 && data[0] == '{') {
        char p[400];
        snprintf(p, sizeof p, "%s/model.safetensors.index.json", st_dirs(1));
        fuzz_put_file(p, data, size);
        alrd_safetensors_set set;
        rc = alrd_safetensors_set_open_index(&set, p, &err);
        fuzz_check_error(rc, &err);
        if (rc == 0) {
            for (int i = 0; i < set.n_tensors; i++)
                FUZZ_CHECK(alrd_safetensors_set_find(&set, set.tensors[i].name) != NULL);
            st_rows(set.tensors, set.n_tensors);
            alrd_safetensors_set_close(&set);
        }
        return 0;
    }
    const char *path = fuzz_memfile(data, size);
    alrd_safetensors f;
    rc = alrd_safetensors_open(&f, path, &err);
    fuzz_check_error(rc, &err);
    if (rc) return 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const alrd_tensor *t = &f.tensors[i];
        FUZZ_CHECK((const uint8_t *)t->data >= f.map.data &&
                   (const uint8_t *)t->data + t->nbytes <= f.map.data + f.map.size);
    }
    st_rows(f.tensors, f.n_tensors);
    alrd_safetensors_close(&f);

    /* The same bytes as the checkpoint of a tiny HF model directory. */
    char p[400];
    snprintf(p, sizeof p, "%s/model.safetensors", st_dirs(0));
    fuzz_put_file(p, data, size);
    alrd_source s;
    rc = alrd_source_open(&s, st_dirs(0), &err);
    fuzz_check_error(rc, &err);
    if (rc) return 0;
    alrd_model m;
    rc = alrd_model_load(&m, &s, &err);
    fuzz_check_error(rc, &err);
    alrd_model_free(&m);
    alrd_source_close(&s);
    return 0;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_safetensors(data, size); }
#endif
