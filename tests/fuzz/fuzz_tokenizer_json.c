/* fuzz_tokenizer_json: tokenizer.json (+ tokenizer_config.json) ->
 * alrd_vocab -> tokenizer, on arbitrary text. The input is tokenizer.json,
 * optionally followed by a line "#config" and the tokenizer_config.json.
 * What is accepted is encoded/decoded, formatted as a chat, written back
 * with alrd_hf_tokenizer_write (must read back with the same tokens) and
 * alrd_hf_tokenizer_config_write / alrd_hf_generation_config_write. */
#include "fuzz_util.h"

#include "../../formats/hf.h"
#include "../../runtime/tokenizer.h"

static void tj_tokenize(const alrd_vocab *v) {
    static const char text[] = "Hi there, 2024! <s> \xe4\xbd\xa0\xe5\xa5\xbd  tabs\tand\nlines";
    fuzz_run_tokenizer(v, text, sizeof text - 1);
}

int fuzz_tokenizer_json(const uint8_t *data, size_t size) {
    static const char sep[] = "\n#config\n";
    const uint8_t *cfg = memmem(data, size, sep, sizeof sep - 1);
    size_t tok_len = cfg ? (size_t)(cfg - data) : size;
    char tj[300], tc[300], out[340];
    snprintf(tj, sizeof tj, "%s/tokenizer.json", fuzz_dir());
    snprintf(tc, sizeof tc, "%s/tokenizer_config.json", fuzz_dir());
    fuzz_put_file(tj, data, tok_len);
    if (cfg) {
        const uint8_t *c = cfg + sizeof sep - 1;
        fuzz_put_file(tc, c, size - (size_t)(c - data));
    } else {
        fuzz_put_file(tc, NULL, 0);
    }
    alrd_vocab v;
    alrd_error err = {{0}};
    int rc = alrd_hf_vocab_read(&v, tj, &err);
    fuzz_check_error(rc, &err);
    if (rc) return 0;
    FUZZ_CHECK(v.n_tokens > 0 && v.tokens);
    for (int32_t i = 0; i < v.n_tokens; i++) FUZZ_CHECK(v.tokens[i] != NULL);
    FUZZ_CHECK(v.bos_id < v.n_tokens && v.eos_id < v.n_tokens && v.unk_id < v.n_tokens &&
               v.pad_id < v.n_tokens);
    tj_tokenize(&v);
    char *chat = alrd_chat_format(&v, "sys", "hello", &err);
    if (!chat) fuzz_check_error(-1, &err);
    free(chat);

    /* written back, read back (no tokenizer_config.json: only the file) */
    char sub[300];
    snprintf(sub, sizeof sub, "%s/out", fuzz_dir());
    mkdir(sub, 0700);
    snprintf(out, sizeof out, "%s/tokenizer.json", sub);
    rc = alrd_hf_tokenizer_write(&v, out, &err);
    fuzz_check_error(rc, &err);
    if (rc == 0) {
        alrd_vocab back;
        rc = alrd_hf_vocab_read(&back, out, &err);
        if (rc) fprintf(stderr, "read-back failed: %s\n", err.msg);
        FUZZ_CHECK(rc == 0);
        FUZZ_CHECK(back.n_tokens == v.n_tokens);
        for (int32_t i = 0; i < v.n_tokens; i++) FUZZ_CHECK(!strcmp(back.tokens[i], v.tokens[i]));
        alrd_vocab_free(&back);
        char cfgp[360]; /* not next to out: the read-back must see tokenizer.json alone */
        snprintf(cfgp, sizeof cfgp, "%s/tokenizer_config.json", fuzz_dir());
        fuzz_check_error(alrd_hf_tokenizer_config_write(&v, 2048, cfgp, &err), &err);
        snprintf(cfgp, sizeof cfgp, "%s/generation_config.json", fuzz_dir());
        fuzz_check_error(alrd_hf_generation_config_write(&v, cfgp, &err), &err);
    }
    alrd_vocab_free(&v);
    return 0;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_tokenizer_json(data, size); }
#endif
