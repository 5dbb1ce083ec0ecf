/* fuzz_ranks_json: alrd_ranks_json_parse on arbitrary text. The first byte
 * picks the layer count (1..64), the second the full rank (1..256); what is
 * accepted must hold only allowed ranks and format back to JSON that parses
 * to the same ranks. */
#include "fuzz_util.h"

#include "../../calib/ranks.h"

int fuzz_ranks_json(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    int n_layers = 1 + data[0] % 64, full = 1 + data[1];
    char *json = fuzz_cstr(data + 2, size - 2);
    int k[64], v[64], k2[64], v2[64];
    alrd_error err = {{0}};
    int rc = alrd_ranks_json_parse(json, "ranks.json", n_layers, full, k, v, &err);
    free(json);
    fuzz_check_error(rc, &err);
    if (rc) return 0;
    for (int l = 0; l < n_layers; l++) {
        FUZZ_CHECK(k[l] >= 0 && k[l] <= full && (k[l] % 8 == 0 || k[l] == full));
        FUZZ_CHECK(v[l] >= 0 && v[l] <= full && (v[l] % 8 == 0 || v[l] == full));
    }
    char *s = alrd_ranks_json_format(n_layers, k, v);
    FUZZ_CHECK(s != NULL);
    rc = alrd_ranks_json_parse(s, "ranks.json", n_layers, full, k2, v2, &err);
    free(s);
    FUZZ_CHECK(rc == 0);
    FUZZ_CHECK(!memcmp(k, k2, sizeof(int) * n_layers) && !memcmp(v, v2, sizeof(int) * n_layers));
    return 0;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_ranks_json(data, size); }
#endif
