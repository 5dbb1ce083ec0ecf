/* sweep_report: CSV and SVG of alrd-sweep's rows (see sweep_report.h). */
#include "sweep_report.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

double alrd_row_num(const cJSON *row, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(row, k);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}
const char *alrd_row_str(const cJSON *row, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(row, k);
    return cJSON_IsString(x) ? x->valuestring : "";
}

/* growing string */
typedef struct { char *p; size_t n, cap; int oom; } sbuf;
static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) { b->oom = 1; return; }
        if (b->p && b->n + (size_t)k < b->cap) { b->n += (size_t)k; return; }
        size_t nc = (b->cap + (size_t)k + 1) * 2;
        char *np = realloc(b->p, nc);
        if (!np) { b->oom = 1; return; }
        b->p = np;
        b->cap = nc;
    }
}
static void sb_xml(sbuf *b, const char *s) { /* text content escaped */
    for (; *s; s++) {
        if (*s == '<') sb_printf(b, "&lt;");
        else if (*s == '>') sb_printf(b, "&gt;");
        else if (*s == '&') sb_printf(b, "&amp;");
        else sb_printf(b, "%c", *s);
    }
}

static const char *CSV_COLS[] = {"id", "label", "kind", "rank_ratio", "group_heads", "hadamard", "value_only",
                                 "k_bits_config", "v_bits_config", "budget_bits_per_token", "kept_fraction",
                                 "predicted_kl", "predicted_kl_truncation", "predicted_kl_quantisation",
                                 "kv_bytes_per_token_ctx", "kv_bytes_per_token", "kv_bits_per_token",
                                 "compression_ratio", "ppl", "ppl_stderr", "kl", "kl_stderr", "top1", "n_scored",
                                 "decode_path", "seconds_build", "seconds_eval", "error"};

char *alrd_sweep_csv(const cJSON *rows) {
    sbuf b = {0};
    size_t nc = sizeof CSV_COLS / sizeof *CSV_COLS;
    for (size_t i = 0; i < nc; i++) sb_printf(&b, "%s%s", i ? "," : "", CSV_COLS[i]);
    sb_printf(&b, "\n");
    const cJSON *row;
    cJSON_ArrayForEach(row, rows) {
        for (size_t i = 0; i < nc; i++) {
            const cJSON *x = cJSON_GetObjectItemCaseSensitive(row, CSV_COLS[i]);
            if (i) sb_printf(&b, ",");
            if (cJSON_IsString(x)) { /* quoted, quotes doubled */
                sb_printf(&b, "\"");
                for (const char *s = x->valuestring; *s; s++) sb_printf(&b, *s == '"' ? "\"\"" : "%c", *s);
                sb_printf(&b, "\"");
            } else if (cJSON_IsBool(x)) {
                sb_printf(&b, "%d", cJSON_IsTrue(x));
            } else if (cJSON_IsNumber(x)) {
                sb_printf(&b, "%.10g", x->valuedouble);
            }
        }
        sb_printf(&b, "\n");
    }
    if (b.oom) { free(b.p); return NULL; }
    return b.p;
}

/* -- the plot: PPL vs KV bytes per token (log x), Pareto front -- */

typedef struct { double x, y, err; const char *label; int fam, pareto; } pt;

static int family(const cJSON *row) {
    const char *k = alrd_row_str(row, "kind");
    if (!strcmp(k, "fp16")) return 0;
    if (!strcmp(k, "kivi")) return 1;
    if (!strcmp(k, "joint")) return 5;
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(row, "value_only"))) return 4;
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(row, "hadamard")) ? 3 : 2;
}
static const char *FAM_NAME[] = {"fp16 cache (original model)", "KIVI, full rank", "low rank + KIVI",
                                 "low rank + KIVI, Hadamard", "value-only low rank", "joint rank+bits budget"};
static const char *FAM_COLOR[] = {"#000000", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#d62728"};

static double nice_step(double range, int target) {
    double raw = range / target, p = pow(10, floor(log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

typedef struct { double x0, y0, x1, y1; } box;
static int overlaps(const box *a, const box *b) { return a->x0 < b->x1 && b->x0 < a->x1 && a->y0 < b->y1 && b->y0 < a->y1; }

char *alrd_sweep_svg(const cJSON *rows, const char *title, const char *subtitle) {
    pt p[512];
    int n = 0;
    const cJSON *row;
    cJSON_ArrayForEach(row, rows) {
        double x = alrd_row_num(row, "kv_bytes_per_token"), y = alrd_row_num(row, "ppl");
        if (n == 512 || !(x > 0) || !(y > 0) || !isfinite(y)) continue;
        p[n] = (pt){x, y, alrd_row_num(row, "ppl_stderr"), alrd_row_str(row, "label"), family(row), 0};
        n++;
    }
    /* Pareto: no other point with <= bytes and < ppl (or < bytes and <= ppl) */
    for (int i = 0; i < n; i++) {
        p[i].pareto = 1;
        for (int j = 0; j < n && p[i].pareto; j++)
            if (j != i && p[j].x <= p[i].x && p[j].y <= p[i].y && (p[j].x < p[i].x || p[j].y < p[i].y)) p[i].pareto = 0;
    }
    const double W = 1000, H = 620, ml = 80, mr = 250, mt = 60, mb = 60, pw = W - ml - mr, ph = H - mt - mb;
    double xmin = 1e300, xmax = 0, ymin = 1e300, ymax = 0;
    for (int i = 0; i < n; i++) {
        xmin = fmin(xmin, p[i].x); xmax = fmax(xmax, p[i].x);
        ymin = fmin(ymin, p[i].y); ymax = fmax(ymax, p[i].y);
    }
    if (!n) { xmin = 100; xmax = 10000; ymin = 1; ymax = 10; }
    double lx0 = log10(xmin) - 0.08, lx1 = log10(xmax) + 0.08;
    if (lx1 - lx0 < 0.5) { double c = (lx0 + lx1) / 2; lx0 = c - 0.25; lx1 = c + 0.25; }
    int ylog = ymax / ymin > 4;
    double y0 = ylog ? log10(ymin) : ymin, y1 = ylog ? log10(ymax) : ymax;
    double pad = (y1 - y0) * 0.08;
    if (pad <= 0) pad = ylog ? 0.05 : fmax(0.05 * y0, 0.01);
    y0 -= pad; y1 += pad;
#define SX(v) (ml + (log10(v) - lx0) / (lx1 - lx0) * pw)
#define SY(v) (mt + ph - ((ylog ? log10(v) : (v)) - y0) / (y1 - y0) * ph)
    sbuf b = {0};
    sb_printf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
              "font-family=\"DejaVu Sans, Arial, sans-serif\">\n", W, H, W, H);
    sb_printf(&b, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    sb_printf(&b, "<text x=\"%.0f\" y=\"24\" font-size=\"16\" font-weight=\"bold\">", ml);
    sb_xml(&b, title);
    sb_printf(&b, "</text>\n<text x=\"%.0f\" y=\"44\" font-size=\"12\" fill=\"#444\">", ml);
    sb_xml(&b, subtitle);
    sb_printf(&b, "</text>\n");
    sb_printf(&b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n", ml, mt, pw, ph);
    /* x ticks: 1, 2, 5 x 10^k */
    for (int e = (int)floor(lx0); e <= (int)ceil(lx1); e++)
        for (int m = 1; m <= 9; m++) {
            double v = m * pow(10, e), lv = log10(v);
            if (lv < lx0 || lv > lx1) continue;
            double x = SX(v);
            int major = m == 1 || m == 2 || m == 5 || lx1 - lx0 < 1.1; /* a short range: label every tick */
            sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n", x, mt, x, mt + ph,
                      major ? "#ddd" : "#f2f2f2");
            if (major)
                sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\">%g</text>\n",
                          x, mt + ph, x, mt + ph + 5, x, mt + ph + 18, v);
        }
    /* y ticks */
    if (ylog) {
        for (int e = (int)floor(y0); e <= (int)ceil(y1); e++)
            for (int m = 1; m <= 9; m++) {
                double v = m * pow(10, e), lv = log10(v);
                if (lv < y0 || lv > y1) continue;
                double y = SY(v);
                int major = m == 1 || m == 2 || m == 5 || (y1 - y0 < 1.2 && (m == 3 || m == 4 || m == 7));
                sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n", ml, y, ml + pw,
                          y, major ? "#ddd" : "#f2f2f2");
                if (major)
                    sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>"
                              "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">%g</text>\n",
                              ml - 5, y, ml, y, ml - 8, y + 4, v);
            }
    } else {
        double st = nice_step(y1 - y0, 6);
        for (double v = ceil(y0 / st) * st; v <= y1 + 1e-12; v += st) {
            double y = SY(v);
            sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                      "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>"
                      "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">%g</text>\n",
                      ml, y, ml + pw, y, ml - 5, y, ml, y, ml - 8, y + 4, fabs(v) < 1e-12 ? 0 : v);
        }
    }
    sb_printf(&b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" text-anchor=\"middle\">KV cache bytes per token, all "
              "layers (log scale)</text>\n", ml + pw / 2, H - 18);
    sb_printf(&b, "<text transform=\"translate(22 %.1f) rotate(-90)\" font-size=\"13\" text-anchor=\"middle\">"
              "perplexity%s (lower is better)</text>\n", mt + ph / 2, ylog ? " (log scale)" : "");
    /* Pareto front, in x order */
    int order[512], no = 0;
    for (int i = 0; i < n; i++)
        if (p[i].pareto) order[no++] = i;
    for (int i = 1; i < no; i++)
        for (int j = i; j > 0 && p[order[j]].x < p[order[j - 1]].x; j--) {
            int t = order[j]; order[j] = order[j - 1]; order[j - 1] = t;
        }
    if (no > 1) {
        sb_printf(&b, "<polyline fill=\"none\" stroke=\"#555\" stroke-width=\"1.5\" stroke-dasharray=\"5,3\" points=\"");
        for (int i = 0; i < no; i++) sb_printf(&b, "%.1f,%.1f ", SX(p[order[i]].x), SY(p[order[i]].y));
        sb_printf(&b, "\"/>\n");
    }
    /* error bars, points, labels placed to avoid each other and the points */
    box used[1024];
    int nu = 0;
    for (int i = 0; i < n; i++) {
        double x = SX(p[i].x), y = SY(p[i].y);
        used[nu++] = (box){x - 5, y - 5, x + 5, y + 5};
        if (p[i].err > 0 && p[i].y - p[i].err > 0) {
            double ya = SY(p[i].y + p[i].err), yb = SY(p[i].y - p[i].err);
            ya = fmax(ya, mt); yb = fmin(yb, mt + ph);
            sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-opacity=\"0.35\"/>\n",
                      x, ya, x, yb, FAM_COLOR[p[i].fam]);
        }
    }
    for (int i = 0; i < n; i++) {
        double x = SX(p[i].x), y = SY(p[i].y);
        if (p[i].pareto)
            sb_printf(&b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"8\" fill=\"none\" stroke=\"#000\" stroke-width=\"1.5\"/>\n", x, y);
        sb_printf(&b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4.5\" fill=\"%s\"/>\n", x, y, FAM_COLOR[p[i].fam]);
    }
    for (int i = 0; i < n; i++) {
        double x = SX(p[i].x), y = SY(p[i].y), w = 6.4 * strlen(p[i].label) + 2, h = 13;
        const double cand[][2] = {{10, -2}, {10, 12}, {-10 - w, -2}, {-10 - w, 12}, {-w / 2, -12}, {-w / 2, 22},
                                  {10, -14}, {10, 24}, {-10 - w, -14}, {-10 - w, 24}, {-w / 2, -24}, {-w / 2, 34}};
        int best = 0, best_hits = 1 << 30;
        for (int k = 0; k < 12; k++) {
            box bx = {x + cand[k][0], y + cand[k][1] - h + 3, x + cand[k][0] + w, y + cand[k][1] + 3};
            int hits = 0;
            if (bx.x0 < ml || bx.x1 > ml + pw || bx.y0 < mt || bx.y1 > mt + ph) hits += 2;
            for (int u = 0; u < nu; u++) hits += overlaps(&bx, &used[u]);
            if (hits < best_hits) { best_hits = hits; best = k; }
            if (!hits) break;
        }
        box bx = {x + cand[best][0], y + cand[best][1] - h + 3, x + cand[best][0] + w, y + cand[best][1] + 3};
        if (nu < 1024) used[nu++] = bx;
        sb_printf(&b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"%s\">", bx.x0 + 1, y + cand[best][1],
                  FAM_COLOR[p[i].fam]);
        sb_xml(&b, p[i].label);
        sb_printf(&b, "</text>\n");
    }
    /* legend */
    double lx = ml + pw + 20, ly = mt + 10;
    sb_printf(&b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" font-weight=\"bold\">legend</text>\n", lx, ly);
    ly += 20;
    for (int f = 0; f < 6; f++) {
        int present = 0;
        for (int i = 0; i < n; i++) present |= p[i].fam == f;
        if (!present) continue;
        sb_printf(&b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4.5\" fill=\"%s\"/><text x=\"%.1f\" y=\"%.1f\" "
                  "font-size=\"11\">%s</text>\n", lx + 6, ly - 4, FAM_COLOR[f], lx + 18, ly, FAM_NAME[f]);
        ly += 18;
    }
    sb_printf(&b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"8\" fill=\"none\" stroke=\"#000\" stroke-width=\"1.5\"/>"
              "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#555\" stroke-width=\"1.5\" "
              "stroke-dasharray=\"5,3\"/><text x=\"%.1f\" y=\"%.1f\" font-size=\"11\">Pareto front</text>\n",
              lx + 6, ly - 4, lx - 4, ly - 4, lx + 16, ly - 4, lx + 22, ly);
    ly += 18;
    sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888\"/><text x=\"%.1f\" y=\"%.1f\" "
              "font-size=\"11\">PPL +/- stderr</text>\n", lx + 6, ly - 10, lx + 6, ly + 2, lx + 18, ly);
    ly += 26;
    const char *keys[] = {"labels: ratio/bits", "  KIVI b: full rank, b bits", "  0.5/4: half the dims, 4 bits",
                          "  k4v2: 4-bit K, 2-bit V", "  H: Hadamard-rotated latent", "  V: values only low rank",
                          "  g1: one latent per KV head", "  J30k: 30k-bit budget", "x: amortised over the stated",
                          "  context (residual window)"};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        sb_printf(&b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10.5\" fill=\"#444\" xml:space=\"preserve\">", lx, ly);
        sb_xml(&b, keys[k]);
        sb_printf(&b, "</text>\n");
        ly += 15;
    }
    sb_printf(&b, "</svg>\n");
#undef SX
#undef SY
    if (b.oom) { free(b.p); return NULL; }
    return b.p;
}

