/* hadamard: a seeded random orthogonal rotation H (r x r) of the latent
 * space, folded offline into the factors (docs/design.md 5.4): B <- H B, A <- A H^T,
 * so A B is unchanged while the latent l = B x is rotated, spreading the
 * energy SVD piles into the first channels before KIVI quantisation.
 *
 * Construction, first that applies:
 *   ALRD_ROT_WALSH     r a power of two: Sylvester-Walsh-Hadamard matrix;
 *   ALRD_ROT_HADAMARD  r = 2^k * b with b a Paley order (b = q+1, q prime = 3
 *                      mod 4, Paley I; or b = 2(q+1), q prime = 1 mod 4,
 *                      Paley II): Sylvester(2^k) (x) Paley(b) -- e.g. 12, 20,
 *                      24, 28, 36, 48, 96 (2x48), 160 (2x80), 192;
 *   ALRD_ROT_RANDOM    otherwise: Q of the QR of a seeded Gaussian matrix
 *                      (LAPACKE dgeqrf/dorgqr; Haar-distributed).
 * Hadamard kinds get random column sign flips from the seed, and are scaled
 * by 1/sqrt(r) so H H^T = I and every |h_ij| = 1/sqrt(r). The same (r, seed)
 * always gives the same matrix. */
#ifndef ALRD_HADAMARD_H
#define ALRD_HADAMARD_H

#include <stdint.h>
#include "../formats/io.h"

typedef enum {
    ALRD_ROT_WALSH = 1,
    ALRD_ROT_HADAMARD = 2,
    ALRD_ROT_RANDOM = 3
} alrd_rotation_kind;

/* The kind alrd_hadamard_matrix will build for r (0 if r < 1). */
alrd_rotation_kind alrd_hadamard_kind(int r);

/* Fills H [r*r] (row-major, orthonormal). kind may be NULL. */
int alrd_hadamard_matrix(int r, uint64_t seed, double *H, alrd_rotation_kind *kind,
                         alrd_error *err);

/* Folds H (r x r) into factors A [rows, r] (up) and B [r, d] (down), in
 * place: B <- H B, A <- A H^T (fp64 products). */
int alrd_hadamard_fold(const double *H, int r, float *A, int rows, float *B, int d,
                       alrd_error *err);

#endif
