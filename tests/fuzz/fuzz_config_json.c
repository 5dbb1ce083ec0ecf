/* fuzz_config_json: config.json -> alrd_config (formats/hf.h) on arbitrary
 * text; what it accepts must pass alrd_config_validate or fail it cleanly,
 * and a llama config written back must read back the same. */
#include "fuzz_util.h"

#include "../../formats/hf.h"
#include "../../formats/source.h"

int fuzz_config_json(const uint8_t *data, size_t size) {
    char *json = fuzz_cstr(data, size);
    alrd_config c;
    alrd_error err = {{0}};
    int rc = alrd_hf_config_parse(&c, json, size, "config.json", &err);
    free(json);
    fuzz_check_error(rc, &err);
    if (rc) return 0;
    rc = alrd_config_validate(&c, "config.json", &err);
    fuzz_check_error(rc, &err);
    if (rc || strcmp(c.arch, "llama")) return 0;
    char p[300];
    snprintf(p, sizeof p, "%s/config.json", fuzz_dir());
    rc = alrd_hf_config_write(&c, NULL, "float32", p, &err);
    fuzz_check_error(rc, &err);
    if (rc) return 0;
    alrd_config back;
    rc = alrd_hf_config_read(&back, p, &err);
    if (rc) fprintf(stderr, "re-read failed: %s\n", err.msg);
    FUZZ_CHECK(rc == 0);
    FUZZ_CHECK(back.n_layers == c.n_layers && back.hidden == c.hidden && back.n_heads == c.n_heads &&
               back.n_kv_heads == c.n_kv_heads && back.head_dim == c.head_dim && back.ffn == c.ffn &&
               back.vocab_size == c.vocab_size && back.max_ctx == c.max_ctx &&
               back.rms_eps == c.rms_eps && back.rope_theta == c.rope_theta &&
               back.rope_llama3 == c.rope_llama3 && back.tie_embeddings == c.tie_embeddings &&
               back.attention_bias == c.attention_bias && back.mlp_bias == c.mlp_bias);
    return 0;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_config_json(data, size); }
#endif
