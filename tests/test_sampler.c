/* Sampler: greedy, top-k, top-p and the seeded generator. */
#include "testutil.h"

#include "../runtime/sampler.h"

static const float logits[8] = {1.0f, 3.0f, 2.5f, -1.0f, 0.0f, 2.9f, -5.0f, 0.5f};

static void test_greedy_and_filters(void **state) {
    (void)state;
    alrd_sampler s;
    assert_int_equal(alrd_sampler_init(&s, 8, 0.0f, 0, 1.0f, 1), 0);
    assert_int_equal(alrd_sampler_sample(&s, logits), 1);
    alrd_sampler_free(&s);
    /* top-k 1 is greedy at any temperature */
    assert_int_equal(alrd_sampler_init(&s, 8, 5.0f, 1, 1.0f, 7), 0);
    for (int i = 0; i < 100; i++) assert_int_equal(alrd_sampler_sample(&s, logits), 1);
    alrd_sampler_free(&s);
    /* top-k 2 only ever gives the two largest */
    assert_int_equal(alrd_sampler_init(&s, 8, 1.0f, 2, 1.0f, 7), 0);
    int seen[8] = {0};
    for (int i = 0; i < 2000; i++) seen[alrd_sampler_sample(&s, logits)]++;
    assert_true(seen[1] > 0 && seen[5] > 0);
    assert_int_equal(seen[1] + seen[5], 2000);
    /* p(1)/p(5) = e^0.1 */
    double ratio = (double)seen[1] / seen[5];
    assert_true(ratio > 0.95 && ratio < 1.3);
    alrd_sampler_free(&s);
    /* top-p 0.3: the nucleus is {1} alone (p(1) = 0.32 at T=1) */
    assert_int_equal(alrd_sampler_init(&s, 8, 1.0f, 0, 0.3f, 3), 0);
    for (int i = 0; i < 200; i++) assert_int_equal(alrd_sampler_sample(&s, logits), 1);
    alrd_sampler_free(&s);
}

static void test_seeded(void **state) {
    (void)state;
    alrd_sampler a, b, c;
    assert_int_equal(alrd_sampler_init(&a, 8, 1.0f, 0, 1.0f, 42), 0);
    assert_int_equal(alrd_sampler_init(&b, 8, 1.0f, 0, 1.0f, 42), 0);
    assert_int_equal(alrd_sampler_init(&c, 8, 1.0f, 0, 1.0f, 43), 0);
    int same = 1, differ = 0;
    for (int i = 0; i < 64; i++) {
        int x = alrd_sampler_sample(&a, logits), y = alrd_sampler_sample(&b, logits), z = alrd_sampler_sample(&c, logits);
        same &= x == y;
        differ |= x != z;
        assert_true(x >= 0 && x < 8);
    }
    assert_true(same);
    assert_true(differ);
    alrd_sampler_free(&a);
    alrd_sampler_free(&b);
    alrd_sampler_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_and_filters),
        cmocka_unit_test(test_seeded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
