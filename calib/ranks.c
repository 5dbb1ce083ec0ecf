/* ranks: greedy rank / rank+bits allocation and ranks.json. */
#include "ranks.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int check_modules(const alrd_rank_module *m, int n, int step, alrd_error *err) {
    if (n <= 0 || step <= 0) return alrd_errf(err, "ranks: %d modules, step %d", n, step);
    for (int i = 0; i < n; i++) {
        if (m[i].max_rank <= 0 || !m[i].tail)
            return alrd_errf(err, "ranks: module %d: max_rank %d / no tail table", i, m[i].max_rank);
        if (!(m[i].weight >= 0) || !isfinite(m[i].weight))
            return alrd_errf(err, "ranks: module %d: weight %g (must be finite and >= 0)", i,
                             m[i].weight);
        for (int r = 0; r <= m[i].max_rank; r++)
            if (!isfinite(m[i].tail[r]))
                return alrd_errf(err, "ranks: module %d: tail[%d] is not finite", i, r);
    }
    return 0;
}

static int min_rank(const alrd_rank_module *m, int step) {
    return step < m->max_rank ? step : m->max_rank;
}

/* Next rank on the grid {step, 2 step, ..., max_rank}. */
static int next_rank(int r, int step, int max_rank) {
    int nr = (r / step + 1) * step;
    return nr < max_rank ? nr : max_rank;
}

int alrd_ranks_allocate(const alrd_rank_module *m, int n, double ratio, int step, int *ranks,
                        alrd_error *err) {
    if (check_modules(m, n, step, err)) return -1;
    if (!(ratio > 0 && ratio <= 1))
        return alrd_errf(err, "ranks: rank ratio %g outside (0, 1]", ratio);
    long long total = 0, used = 0;
    for (int i = 0; i < n; i++) total += m[i].max_rank;
    const long long budget = (long long)floor(ratio * (double)total + 1e-9);
    for (int i = 0; i < n; i++) {
        ranks[i] = min_rank(&m[i], step);
        used += ranks[i];
    }
    if (used > budget)
        return alrd_errf(err, "ranks: rank ratio %g gives %lld dims but the minimum rank %d in "
                         "each of %d modules needs %lld", ratio, budget, step, n, used);
    for (;;) {
        int best = -1;
        double best_score = -1;
        for (int i = 0; i < n; i++) {
            int r = ranks[i];
            if (r >= m[i].max_rank) continue;
            int nr = next_rank(r, step, m[i].max_rank), add = nr - r;
            if (used + add > budget) continue;
            double score = m[i].weight * (m[i].tail[r] - m[i].tail[nr]) / add;
            if (score > best_score) {
                best_score = score;
                best = i;
            }
        }
        if (best < 0) break;
        int nr = next_rank(ranks[best], step, m[best].max_rank);
        used += nr - ranks[best];
        ranks[best] = nr;
    }
    return 0;
}

int alrd_ranks_uniform(const alrd_rank_module *m, int n, double ratio, int step, int *ranks,
                       alrd_error *err) {
    if (check_modules(m, n, step, err)) return -1;
    if (!(ratio > 0 && ratio <= 1))
        return alrd_errf(err, "ranks: rank ratio %g outside (0, 1]", ratio);
    for (int i = 0; i < n; i++) {
        int r = (int)floor(ratio * m[i].max_rank / step + 0.5) * step;
        int lo = min_rank(&m[i], step);
        ranks[i] = r < lo ? lo : r > m[i].max_rank ? m[i].max_rank : r;
    }
    return 0;
}

double alrd_ranks_predicted(const alrd_rank_module *m, int n, const int *ranks) {
    double s = 0;
    for (int i = 0; i < n; i++) s += m[i].weight * m[i].tail[ranks[i]];
    return s;
}

/* ------------------------------------------------------------ rank + bits */

int alrd_ranks_allocate_bits(const alrd_rank_module *m, int n, int step, const int *bits_opts,
                             int n_bits_opts, double budget_bytes, alrd_qerr_fn qerr,
                             alrd_bytes_fn bytes, void *ctx, int *ranks, int *bits,
                             alrd_error *err) {
    if (check_modules(m, n, step, err)) return -1;
    if (n_bits_opts <= 0 || !bits_opts || !qerr || !bytes)
        return alrd_errf(err, "ranks: bits options and qerr/bytes callbacks are required");
    for (int b = 1; b < n_bits_opts; b++)
        if (bits_opts[b] <= bits_opts[b - 1])
            return alrd_errf(err, "ranks: bits options must be ascending");
    if (!(budget_bytes > 0) || !isfinite(budget_bytes))
        return alrd_errf(err, "ranks: byte budget %g must be positive", budget_bytes);

    /* Tables per module over the grid (rank index j, bits index b): loss and
     * bytes, evaluated once. Rank index j <-> rank min(step*(j+1), max_rank). */
    int *ng = malloc(sizeof(int) * (size_t)n);
    double **loss = calloc((size_t)n, sizeof(double *)), **cost = calloc((size_t)n, sizeof(double *));
    int *cj = calloc((size_t)n, sizeof(int)), *cb = calloc((size_t)n, sizeof(int));
    int rc = -1;
    if (!ng || !loss || !cost || !cj || !cb) { alrd_errf(err, "ranks: out of memory"); goto out; }
    double used = 0;
    for (int i = 0; i < n; i++) {
        ng[i] = (m[i].max_rank + step - 1) / step;
        size_t cells = (size_t)ng[i] * (size_t)n_bits_opts;
        loss[i] = malloc(sizeof(double) * cells);
        cost[i] = malloc(sizeof(double) * cells);
        if (!loss[i] || !cost[i]) { alrd_errf(err, "ranks: out of memory"); goto out; }
        for (int j = 0; j < ng[i]; j++) {
            int r = (j + 1) * step < m[i].max_rank ? (j + 1) * step : m[i].max_rank;
            for (int b = 0; b < n_bits_opts; b++) {
                double q = qerr(ctx, i, r, bits_opts[b]), c = bytes(ctx, i, r, bits_opts[b]);
                if (!isfinite(q) || q < 0 || !isfinite(c) || c < 0) {
                    alrd_errf(err, "ranks: module %d rank %d bits %d: qerr %g / bytes %g invalid",
                              i, r, bits_opts[b], q, c);
                    goto out;
                }
                loss[i][(size_t)j * n_bits_opts + b] = m[i].weight * (m[i].tail[r] + q);
                cost[i][(size_t)j * n_bits_opts + b] = c;
            }
        }
        used += cost[i][0];
    }
    const double slack = budget_bytes * 1e-12;
    if (used > budget_bytes + slack) {
        alrd_errf(err, "ranks: a budget of %g bytes per token is below the minimum %g (rank %d, "
                  "%d bits in every module)", budget_bytes, used, step, bits_opts[0]);
        goto out;
    }
    for (;;) {
        int bi = -1, bj = 0, bb = 0;
        double best = -1;
        for (int i = 0; i < n; i++) {
            size_t cur = (size_t)cj[i] * n_bits_opts + cb[i];
            for (int j = cj[i]; j < ng[i]; j++)
                for (int b = cb[i]; b < n_bits_opts; b++) {
                    if (j == cj[i] && b == cb[i]) continue;
                    size_t c = (size_t)j * n_bits_opts + b;
                    double gain = loss[i][cur] - loss[i][c], add = cost[i][c] - cost[i][cur];
                    if (!(gain > 0) || used + add > budget_bytes + slack) continue;
                    double score = add <= 0 ? INFINITY : gain / add;
                    if (score > best) {
                        best = score;
                        bi = i; bj = j; bb = b;
                    }
                }
        }
        if (bi < 0) break;
        used += cost[bi][(size_t)bj * n_bits_opts + bb] - cost[bi][(size_t)cj[bi] * n_bits_opts + cb[bi]];
        cj[bi] = bj;
        cb[bi] = bb;
    }
    for (int i = 0; i < n; i++) {
        ranks[i] = (cj[i] + 1) * step < m[i].max_rank ? (cj[i] + 1) * step : m[i].max_rank;
        bits[i] = bits_opts[cb[i]];
    }
    rc = 0;
out:
    for (int i = 0; loss && cost && i < n; i++) { free(loss[i]); free(cost[i]); }
    free(loss); free(cost); free(ng); free(cj); free(cb);
    return rc;
}

/* ------------------------------------------------------------ ranks.json */

char *alrd_ranks_json_format(int n_layers, const int *k_rank, const int *v_rank) {
    size_t cap = 16 + (size_t)(n_layers > 0 ? n_layers : 0) * 2 * 64, n = 0;
    char *s = malloc(cap);
    if (!s) return NULL;
    n += (size_t)snprintf(s + n, cap - n, "{");
    int first = 1;
    for (int l = 0; l < n_layers; l++)
        for (int p = 0; p < 2; p++) {
            int r = p ? v_rank[l] : k_rank[l];
            if (r <= 0) continue;
            n += (size_t)snprintf(s + n, cap - n, "%s\n  \"model.layers.%d.self_attn.%s_proj\": %d",
                                  first ? "" : ",", l, p ? "v" : "k", r);
            first = 0;
        }
    snprintf(s + n, cap - n, "%s}", first ? "" : "\n");
    return s;
}

int alrd_ranks_json_write(const char *path, int n_layers, const int *k_rank, const int *v_rank,
                          alrd_error *err) {
    char *s = alrd_ranks_json_format(n_layers, k_rank, v_rank);
    if (!s) return alrd_errf(err, "%s: out of memory", path);
    alrd_outfile o;
    int rc = -1;
    if (alrd_outfile_open(&o, path, err) == 0) {
        if (alrd_outfile_write(&o, s, strlen(s), err) || alrd_outfile_write(&o, "\n", 1, err))
            alrd_outfile_abort(&o);
        else
            rc = alrd_outfile_commit(&o, err);
    }
    free(s);
    return rc;
}

/* Parses "model.layers.N.self_attn.{k,v}_proj" exactly (N decimal, no sign,
 * no leading zeros). Returns 0 and sets layer, is_v; -1 if the key differs. */
static int parse_key(const char *k, long *layer, int *is_v) {
    static const char pre[] = "model.layers.", mid[] = ".self_attn.";
    if (strncmp(k, pre, sizeof pre - 1)) return -1;
    k += sizeof pre - 1;
    if (*k < '0' || *k > '9' || (k[0] == '0' && k[1] >= '0' && k[1] <= '9')) return -1;
    long v = 0;
    while (*k >= '0' && *k <= '9') {
        v = v * 10 + (*k++ - '0');
        if (v > 1000000) return -1;
    }
    if (strncmp(k, mid, sizeof mid - 1)) return -1;
    k += sizeof mid - 1;
    if (!strcmp(k, "k_proj")) *is_v = 0;
    else if (!strcmp(k, "v_proj")) *is_v = 1;
    else return -1;
    *layer = v;
    return 0;
}

int alrd_ranks_json_parse(const char *json, const char *path, int n_layers, int full_dim,
                          int *k_rank, int *v_rank, alrd_error *err) {
    cJSON *root = cJSON_Parse(json);
    if (!root) return alrd_errf(err, "%s: not valid JSON", path);
    int rc = -1;
    unsigned char *seen = calloc(n_layers > 0 ? (size_t)n_layers * 2 : 1, 1);
    if (!seen) { alrd_errf(err, "%s: out of memory", path); goto out; }
    if (!cJSON_IsObject(root)) {
        alrd_errf(err, "%s: expected an object {\"model.layers.N.self_attn.k_proj\": rank, ...}", path);
        goto out;
    }
    for (int l = 0; l < n_layers; l++) k_rank[l] = v_rank[l] = 0;
    for (const cJSON *it = root->child; it; it = it->next) {
        const char *key = it->string ? it->string : "";
        long layer;
        int is_v;
        if (parse_key(key, &layer, &is_v)) {
            alrd_errf(err, "%s: %s: unknown key (expected model.layers.N.self_attn.k_proj or v_proj)",
                      path, key);
            goto out;
        }
        if (layer >= n_layers) {
            alrd_errf(err, "%s: %s: layer %ld but the model has %d layers", path, key, layer,
                      n_layers);
            goto out;
        }
        if (seen[2 * layer + is_v]++) {
            alrd_errf(err, "%s: %s: key appears twice", path, key);
            goto out;
        }
        double d = cJSON_IsNumber(it) ? it->valuedouble : NAN;
        if (!(d == floor(d)) || d < 1 || d > full_dim) {
            alrd_errf(err, "%s: %s: rank must be an integer in 1..%d", path, key, full_dim);
            goto out;
        }
        int r = (int)d;
        if (r % 8 && r != full_dim) {
            alrd_errf(err, "%s: %s: rank %d is not a multiple of 8 (or the full %d)", path, key,
                      r, full_dim);
            goto out;
        }
        (is_v ? v_rank : k_rank)[layer] = r;
    }
    rc = 0;
out:
    free(seen);
    cJSON_Delete(root);
    return rc;
}

int alrd_ranks_json_read(const char *path, int n_layers, int full_dim, int *k_rank, int *v_rank,
                         alrd_error *err) {
    char *s;
    if (alrd_read_file(path, 1 << 24, &s, NULL, err)) return -1;
    int rc = alrd_ranks_json_parse(s, path, n_layers, full_dim, k_rank, v_rank, err);
    free(s);
    return rc;
}
