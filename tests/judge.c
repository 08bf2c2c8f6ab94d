/* build/judge CASE OUTPUT: judges build/kvcase's OUTPUT for CASE against the case's expectations,
   as the golden README says. select: the kept positions equal the reference's, or where scores
   tie, form a valid top-k (every kept prefix score >= every dropped one, 1e-6 relative) with the
   whole window kept (ChunkKV and composed: equal only; ChunkPress: chunk by chunk, each chunk's
   count and a valid top-k of that chunk's scores). Cases whose scores cover every position
   (kvpress's) judge every position. Rerotate cases (kvpress KeyRerotationPress) then compare each
   head's "rekey" line, the kept keys re-rotated to positions 0..n-1: the same count, every value
   within 1e-5 of the reference relative to the largest magnitude of that head's reference keys.
   stream: every output within 1e-5 of the reference, relative to the step's largest magnitude. Prints one line "PASS name" or "FAIL name: why"; exit status 0 or 1. */
#include "golden_case.h"
#include <math.h>

#define STREAM_TOLERANCE 1e-5
#define REKEY_TOLERANCE 1e-5
#define TIE_TOLERANCE 1e-6

static const char *case_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* ChunkPress: every chunk [a, b) of chunk_length tokens keeps max(1, int((b - a) * (1 - ratio)))
   of its positions, a valid top-k of the chunk's own scores (its window, if any, scores highest) */
static int judge_chunks(const gc_case *c, long h, const unsigned char *kept, const char *name)
{
    long a, b, j, L = c->q_len, cl = c->chunk_length;
    if (cl < 1 || !c->score[h] || c->score_n[h] != L) {
        printf("FAIL %s: head %ld differs and the case has no chunk_length or scores\n", name, h);
        return 1;
    }
    for (a = 0; a < L; a = b) {
        double min_kept = INFINITY, max_dropped = -INFINITY;
        long n = 0, want;
        b = a + cl < L ? a + cl : L;
        want = (long)((double)(b - a) * (1.0 - c->compression_ratio));
        if (want < 1) want = 1;
        for (j = a; j < b; j++) {
            double s = c->score[h][j];
            n += kept[j];
            if (kept[j] && s < min_kept) min_kept = s;
            if (!kept[j] && s > max_dropped) max_dropped = s;
        }
        if (n != want) {
            printf("FAIL %s: head %ld keeps %ld of chunk [%ld, %ld), reference %ld\n", name, h, n, a, b,
                   want);
            return 1;
        }
        if (min_kept < max_dropped - TIE_TOLERANCE * fabs(max_dropped)) {
            printf("FAIL %s: head %ld chunk [%ld, %ld) kept a score %.9g below a dropped %.9g\n", name, h,
                   a, b, min_kept, max_dropped);
            return 1;
        }
    }
    return 0;
}

/* a "rekey <kv_head> <n> <n*head_dim floats>" output line (after every keep line) against the
   reference's; *worst: the largest relative error so far */
static int judge_rekey(const gc_case *c, char *p, unsigned char *seen, double *worst, const char *name)
{
    long h = gc_long(&p, "kv_head"), n = gc_long(&p, "count"), i, d = c->head_dim;
    double scale = 0.0, err = 0.0;
    if (h < 0 || h >= c->n_kv_heads || !c->rekey[h] || seen[h]) {
        printf("FAIL %s: bad or repeated rekey head %ld\n", name, h);
        return 1;
    }
    seen[h] = 1;
    if (n != c->rekey_n[h]) {
        printf("FAIL %s: head %ld rekey has %ld keys, reference %ld\n", name, h, n, c->rekey_n[h]);
        return 1;
    }
    for (i = 0; i < n * d; i++) scale = fmax(scale, fabs(c->rekey[h][i]));
    for (i = 0; i < n * d; i++) {
        char *t = gc_token(&p), *end;
        double x;
        if (!t) { printf("FAIL %s: head %ld rekey has fewer than %ld values\n", name, h, n * d); return 1; }
        x = strtod(t, &end);
        if (*end || x != x) { printf("FAIL %s: head %ld rekey value '%s'\n", name, h, t); return 1; }
        err = fmax(err, fabs(x - c->rekey[h][i]));
    }
    if (gc_token(&p)) { printf("FAIL %s: head %ld rekey has more than %ld values\n", name, h, n * d); return 1; }
    err /= scale > 1e-30 ? scale : 1.0;
    if (err > REKEY_TOLERANCE) {
        printf("FAIL %s: head %ld rekey relative error %.3g\n", name, h, err);
        return 1;
    }
    *worst = fmax(*worst, err);
    return 0;
}

static int judge_select(const gc_case *c, FILE *out, const char *name)
{
    static char line[1 << 20];
    long seen = 0, seen_rekey = 0, prefix = c->q_len - c->window;
    unsigned char rekey_seen[GC_MAX_HEADS] = {0};
    double worst = 0.0;
    while (fgets(line, sizeof line, out)) {
        char *p = line, *tag = gc_token(&p);
        long h, n, i, j;
        long *got;
        unsigned char *kept = NULL;
        if (!tag) continue;
        if (!strcmp(tag, "rekey") && c->rerotate) {
            if (seen != c->n_kv_heads) { printf("FAIL %s: rekey line before every keep line\n", name); return 1; }
            if (judge_rekey(c, p, rekey_seen, &worst, name)) return 1;
            seen_rekey++;
            continue;
        }
        if (strcmp(tag, "keep")) { printf("FAIL %s: unexpected output line '%s'\n", name, tag); return 1; }
        if (seen_rekey) { printf("FAIL %s: keep line after a rekey line\n", name); return 1; }
        h = gc_long(&p, "kv_head");
        n = gc_long(&p, "count");
        if (h < 0 || h >= c->n_kv_heads || !c->keep[h]) { printf("FAIL %s: bad kv head %ld\n", name, h); return 1; }
        if (n != c->keep_n[h]) { printf("FAIL %s: head %ld keeps %ld, reference %ld\n", name, h, n, c->keep_n[h]); return 1; }
        got = (long *)gc_alloc((size_t)n, sizeof(long));
        for (i = 0; i < n; i++) got[i] = gc_long(&p, "position");
        seen++;
        for (i = 0; i < n && got[i] == c->keep[h][i]; i++) {}
        if (i < n && !strcmp(c->policy, "chunkkv")) {
            /* whole chunks: a per-head top-k says nothing */
            printf("FAIL %s: head %ld keeps other chunks than the reference\n", name, h);
            free(got);
            return 1;
        }
        if (i < n && !strcmp(c->policy, "composed")) {
            /* the second press scored what the first kept: another first choice changes its scores */
            printf("FAIL %s: head %ld keeps other positions than the reference\n", name, h);
            free(got);
            return 1;
        }
        if (i < n) {
            /* differs: accept only a valid top-k under the reference's own scores (AdaKV's
               heads too: a head's safeguard and its share are its own best) */
            double min_kept = INFINITY, max_dropped = -INFINITY;
            kept = (unsigned char *)gc_alloc((size_t)c->q_len, 1);
            if (!c->score[h] || (c->score_n[h] != prefix && c->score_n[h] != c->q_len)) {
                printf("FAIL %s: head %ld differs and the case has no scores to judge ties\n", name, h);
                free(got); free(kept);
                return 1;
            }
            for (i = 0; i < n; i++) {
                if (got[i] < 0 || got[i] >= c->q_len || (i && got[i] <= got[i - 1])) {
                    printf("FAIL %s: head %ld positions not ascending and in range\n", name, h);
                    free(got); free(kept);
                    return 1;
                }
                kept[got[i]] = 1;
            }
            if (!strcmp(c->policy, "chunkpress")) { /* no window over the whole prompt: per chunk */
                int bad = judge_chunks(c, h, kept, name);
                free(got); free(kept);
                if (bad) return 1;
                continue;
            }
            for (j = prefix; j < c->q_len; j++)
                if (!kept[j]) {
                    printf("FAIL %s: head %ld dropped window position %ld\n", name, h, j);
                    free(got); free(kept);
                    return 1;
                }
            for (j = 0; j < c->score_n[h]; j++) {
                double s = c->score[h][j];
                if (kept[j] && s < min_kept) min_kept = s;
                if (!kept[j] && s > max_dropped) max_dropped = s;
            }
            if (min_kept < max_dropped - TIE_TOLERANCE * fabs(max_dropped)) {
                printf("FAIL %s: head %ld kept a prefix score %.9g below a dropped %.9g\n", name, h,
                       min_kept, max_dropped);
                free(got); free(kept);
                return 1;
            }
            free(kept);
        }
        free(got);
    }
    if (seen != c->n_kv_heads) { printf("FAIL %s: %ld keep lines for %ld kv heads\n", name, seen, c->n_kv_heads); return 1; }
    if (c->rerotate) {
        if (seen_rekey != c->n_kv_heads) {
            printf("FAIL %s: %ld rekey lines for %ld kv heads\n", name, seen_rekey, c->n_kv_heads);
            return 1;
        }
        printf("  %s: rekey max relative error %.2g\n", name, worst);
    }
    return 0;
}

static int judge_stream(const gc_case *c, FILE *out, const char *name)
{
    static char line[1 << 20];
    long t = 0, dq = c->n_heads * c->head_dim, i;
    double worst = 0.0;
    while (fgets(line, sizeof line, out)) {
        char *p = line, *tag = gc_token(&p);
        double scale = 0.0, err = 0.0;
        if (!tag) continue;
        if (strcmp(tag, "out") || gc_long(&p, "step") != t || t >= c->steps) {
            printf("FAIL %s: expected 'out %ld'\n", name, t);
            return 1;
        }
        if (!c->step[t].out) { printf("FAIL %s: case has no expected output for step %ld\n", name, t); return 1; }
        for (i = 0; i < dq; i++) scale = fmax(scale, fabs(c->step[t].out[i]));
        for (i = 0; i < dq; i++) err = fmax(err, fabs(gc_double(&p, "out") - c->step[t].out[i]));
        err /= scale > 1e-30 ? scale : 1.0;
        if (err > STREAM_TOLERANCE) {
            printf("FAIL %s: step %ld relative error %.3g\n", name, t, err);
            return 1;
        }
        worst = fmax(worst, err);
        t++;
    }
    if (t != c->steps) { printf("FAIL %s: %ld of %ld steps\n", name, t, c->steps); return 1; }
    printf("  %s: max relative error %.2g\n", name, worst);
    return 0;
}

int main(int argc, char **argv)
{
    gc_case c;
    FILE *out;
    int fail;
    const char *name;
    if (argc != 3) { fprintf(stderr, "usage: judge CASE OUTPUT\n"); return 2; }
    gc_read(argv[1], &c, 1);
    name = case_name(argv[1]);
    out = fopen(argv[2], "r");
    if (!out) { fprintf(stderr, "judge: cannot open %s\n", argv[2]); return 2; }
    gc_file = argv[2];
    fail = !strcmp(c.kind, "select") ? judge_select(&c, out, name) : judge_stream(&c, out, name);
    fclose(out);
    gc_free(&c);
    if (!fail) printf("PASS %s\n", name);
    return fail;
}
