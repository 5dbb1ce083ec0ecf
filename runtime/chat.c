/* chat: renders one (system, user) turn with the chat template family the
 * vocab's Jinja chat_template belongs to, as HF apply_chat_template(
 * add_generation_prompt=True) renders it. No Jinja engine: the two
 * families are recognised by their markers and written out directly.
 * The one difference from HF: a template's leading bos_token (Llama-2's
 * "<s>") is left out, as llama.cpp's llama_chat_apply_template does -- the
 * tokenizer adds BOS itself. Encode the result with add_bos = 1 and
 * parse_special = 1 to get the ids HF's apply_chat_template(tokenize=True)
 * gives. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

static char *fmt_alloc(alrd_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static char *fmt_alloc(alrd_error *err, const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s) vsnprintf(s, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    if (!s) alrd_errf(err, "chat: out of memory");
    return s;
}

/* The default system prompt a ChatML template writes when the
 * conversation has none: a literal '<|im_start|>system\n...<|im_end|>'
 * (newline real or escaped) with no expression inside. malloc'd or NULL. */
static char *chatml_default_system(const char *tmpl) {
    static const char open[] = "<|im_start|>system";
    for (const char *p = strstr(tmpl, open); p; p = strstr(p + 1, open)) {
        const char *q = p + sizeof open - 1;
        if (q[0] == '\n') q += 1;
        else if (q[0] == '\\' && q[1] == 'n') q += 2;
        else continue;
        const char *e = strstr(q, "<|im_end|>");
        if (!e) return NULL;
        size_t n = (size_t)(e - q);
        if (memchr(q, '\'', n) || memchr(q, '"', n) || memchr(q, '{', n) || memchr(q, '+', n))
            continue; /* an expression (the caller's system message), not a literal */
        char *s = malloc(n + 1);
        if (!s) return NULL;
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
            if (q[i] == '\\' && i + 1 < n && q[i + 1] == 'n') {
                s[o++] = '\n';
                i++;
            } else {
                s[o++] = q[i];
            }
        }
        s[o] = 0;
        return s;
    }
    return NULL;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

char *alrd_chat_format(const alrd_vocab *v, const char *system, const char *user, alrd_error *err) {
    if (!user) user = "";
    const char *tmpl = v ? v->chat_template : NULL;
    if (!tmpl) {
        alrd_errf(err, "chat: chat_template: the vocab has none");
        return NULL;
    }
    if (strstr(tmpl, "<|im_start|>")) {
        char *def = NULL;
        if (!system && strstr(tmpl, "!= 'system'")) def = chatml_default_system(tmpl);
        const char *sys = system ? system : def;
        char *s;
        if (sys)
            s = fmt_alloc(err,
                          "<|im_start|>system\n%s<|im_end|>\n<|im_start|>user\n%s<|im_end|>\n"
                          "<|im_start|>assistant\n",
                          sys, user);
        else
            s = fmt_alloc(err, "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n", user);
        free(def);
        return s;
    }
    if (strstr(tmpl, "[INST]")) {
        /* content = ['<<SYS>>\n' + system + '\n<</SYS>>\n\n'] + user, then
         * .strip() (bos_token left to the tokenizer, see above) */
        char *content = system
                            ? fmt_alloc(err, "<<SYS>>\n%s\n<</SYS>>\n\n%s", system, user)
                            : fmt_alloc(err, "%s", user);
        if (!content) return NULL;
        char *a = content, *e = content + strlen(content);
        while (a < e && is_space(*a)) a++;
        while (e > a && is_space(e[-1])) e--;
        char *s = fmt_alloc(err, "[INST] %.*s [/INST]", (int)(e - a), a);
        free(content);
        return s;
    }
    alrd_errf(err, "chat: chat_template: not a known family (expected ChatML <|im_start|> or "
                   "Llama-2 [INST])");
    return NULL;
}
