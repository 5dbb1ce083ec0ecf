/* source_alrd: placeholder until the .alrd reader lands (another helper
 * replaces this file). */
#include "source.h"

int alrd_source_open_alrd(alrd_source *s, const char *path, alrd_error *err) {
    (void)s;
    return alrd_errf(err, "%s: .alrd files are not supported yet", path);
}
