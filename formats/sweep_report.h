/* sweep_report: alrd-sweep's result rows (JSON objects, one per
 * configuration) as a CSV table and an SVG plot of perplexity against KV
 * bytes per token, with each family's points, error bars and the Pareto
 * front marked. Text in, text out: the caller writes the files. */
#ifndef ALRD_SWEEP_REPORT_H
#define ALRD_SWEEP_REPORT_H

#include <cjson/cJSON.h>

/* A row's number (NAN when absent or not a number) / string ("" likewise). */
double alrd_row_num(const cJSON *row, const char *k);
const char *alrd_row_str(const cJSON *row, const char *k);

/* malloc'd CSV (header + one line per row) / SVG document; NULL when out of memory. */
char *alrd_sweep_csv(const cJSON *rows);
char *alrd_sweep_svg(const cJSON *rows, const char *title, const char *subtitle);

#endif
