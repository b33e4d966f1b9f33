/*
 * `esbridge status [--json]`: per projection its owner and aliases, per
 * generation its state, checkpoint, head, lag, held-back events and open
 * dead letters, then the oldest open writer; as a table, or as one JSON
 * document. --projection narrows it.
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

#include <yajl/yajl_gen.h>

#include "esbridge/json.h"
#include "esbridge/state.h"

/* A number PostgreSQL printed, as a JSON number. */
static void json_num(yajl_gen g, const char *v)
{
	yajl_gen_number(g, v, strlen(v));
}

static void json_generation(yajl_gen g, const struct state_status_row *r)
{
	yajl_gen_map_open(g);
	json_gen_str(g, "generation");
	json_num(g, r->generation);
	json_gen_str(g, "index");
	json_gen_str(g, r->indices);
	json_gen_str(g, "state");
	json_gen_str(g, r->state);
	json_gen_str(g, "checkpoint");
	yajl_gen_map_open(g);
	json_gen_str(g, "transaction_id");
	json_gen_str(g, r->checkpoint_txid); /* xid8: beyond a double's exact range */
	json_gen_str(g, "global_position");
	json_num(g, r->checkpoint_pos);
	yajl_gen_map_close(g);
	json_gen_str(g, "head");
	json_num(g, r->head);
	json_gen_str(g, "lag");
	json_num(g, r->lag);
	json_gen_str(g, "held");
	json_num(g, r->held);
	json_gen_str(g, "dead_letters_open");
	json_num(g, r->letters_open);
	json_gen_str(g, "updated_at");
	json_gen_str(g, r->updated_at);
	json_gen_str(g, "last_error");
	if (*r->last_error) {
		yajl_gen_map_open(g);
		json_gen_str(g, "message");
		json_gen_str(g, r->last_error);
		json_gen_str(g, "at");
		json_gen_str(g, r->last_error_at);
		yajl_gen_map_close(g);
	} else {
		yajl_gen_null(g);
	}
	yajl_gen_map_close(g);
}

static void json_projection(yajl_gen g, const struct projection *proj, const struct state_status *s)
{
	struct state_status_row r;

	yajl_gen_map_open(g);
	json_gen_str(g, "projection");
	json_gen_str(g, proj->name);
	json_gen_str(g, "aliases");
	yajl_gen_array_open(g);
	for (size_t k = 0; k < projection_n_indices(proj); k++)
		json_gen_str(g, projection_alias(proj, k));
	yajl_gen_array_close(g);
	json_gen_str(g, "owner");
	if (s->owner)
		json_gen_str(g, s->owner);
	else
		yajl_gen_null(g);
	json_gen_str(g, "generations");
	yajl_gen_array_open(g);
	for (int i = 0; i < s->n; i++) {
		state_status_row(s, i, &r);
		json_generation(g, &r);
	}
	yajl_gen_array_close(g);
	yajl_gen_map_close(g);
}

static void json_writer(yajl_gen g, const struct state_writer *w, bool found)
{
	json_gen_str(g, "oldest_open_writer");
	if (!found) {
		yajl_gen_null(g);
		return;
	}
	yajl_gen_map_open(g);
	json_gen_str(g, "transaction_id");
	json_gen_str(g, w->transaction_id);
	json_gen_str(g, "pid");
	json_num(g, w->pid);
	json_gen_str(g, "application_name");
	json_gen_str(g, w->application_name);
	json_gen_str(g, "state");
	json_gen_str(g, w->state);
	json_gen_str(g, "age_seconds");
	json_num(g, w->age_seconds);
	yajl_gen_map_close(g);
}

static void text_projection(FILE *out, int name_w, const struct projection *proj, const struct state_status *s)
{
	struct state_status_row r;

	if (s->n) {
		fprintf(out, "%s (alias", proj->name);
		for (size_t k = 0; k < projection_n_indices(proj); k++)
			fprintf(out, "%s %s", k ? "," : (projection_n_indices(proj) > 1 ? "es" : ""),
				projection_alias(proj, k));
		fprintf(out, "): owned by %s\n", s->owner ? s->owner : "no running esbridge");
	}
	for (int i = 0; i < s->n; i++) {
		char at[64];
		bool retired;
		const char *indices;
		size_t first;

		state_status_row(s, i, &r);
		retired = !strcmp(r.state, "retired");
		indices = r.indices;
		first = strcspn(indices, ",");
		snprintf(at, sizeof(at), "%s/%s", r.checkpoint_txid, r.checkpoint_pos);
		/* the first index in the column, the others of the generation on lines below */
		fprintf(out, "%-*s %4s %-24.*s %-9s %-24s %9s %9s %9s %8s %s\n", name_w, proj->name, r.generation,
			(int)first, indices, r.state, at, r.head, retired ? "-" : r.lag, retired ? "-" : r.held,
			r.letters_open, r.updated_at);
		while (indices[first]) {
			const char *more = indices + first + 1;
			first = strcspn(more, ",");
			fprintf(out, "%-*s %4s %.*s\n", name_w, "", "", (int)first, more);
			indices = more;
		}
		if (*r.last_error && !retired)
			fprintf(out, "%*s last error at %s: %s\n", name_w, "", r.last_error_at, r.last_error);
	}
}

static void text_writer(FILE *out, const struct state_writer *w, bool found)
{
	if (found)
		fprintf(out, "oldest open writer: transaction %s (pid %s, application '%s', %s) open for %ss;"
			" events committed after it began wait for it (HELD)\n",
			w->transaction_id, w->pid, w->application_name, w->state, w->age_seconds);
	else
		fprintf(out, "oldest open writer: none\n");
}

/* Prints the status of `projs` (NULL-terminated) on `out`; 0, or -1 with `err` set. */
static int print_status(struct state *st, const struct projection *const *projs, bool json, FILE *out,
			char *err, size_t errsz)
{
	yajl_gen g = NULL;
	struct state_writer w;
	int rc = -1, found, name_w = 16;

	/* the columns fit the longest name */
	for (const struct projection *const *pp = projs; *pp; pp++)
		if ((int)strlen((*pp)->name) > name_w)
			name_w = (int)strlen((*pp)->name);
	if (json) {
		g = yajl_gen_alloc(NULL);
		if (!g) {
			snprintf(err, errsz, "out of memory");
			return -1;
		}
		yajl_gen_config(g, yajl_gen_beautify, 1);
		yajl_gen_map_open(g);
		json_gen_str(g, "projections");
		yajl_gen_array_open(g);
	} else {
		fprintf(out, "%-*s %4s %-24s %-9s %-24s %9s %9s %9s %8s %s\n", name_w, "PROJECTION", "GEN", "INDEX",
			"STATE", "CHECKPOINT(txid/pos)", "HEAD", "LAG", "HELD", "DEAD", "UPDATED");
	}
	for (const struct projection *const *pp = projs; *pp; pp++) {
		struct state_status s;
		if (state_status(st, *pp, &s, err, errsz))
			goto out;
		if (json)
			json_projection(g, *pp, &s);
		else
			text_projection(out, name_w, *pp, &s);
		state_status_release(&s);
	}
	found = state_oldest_writer(st, &w, err, errsz);
	if (found < 0) {
		state_writer_release(&w);
		goto out;
	}
	if (json) {
		const unsigned char *buf;
		size_t len;
		yajl_gen_array_close(g);
		json_writer(g, &w, found);
		yajl_gen_map_close(g);
		if (yajl_gen_get_buf(g, &buf, &len) != yajl_gen_status_ok) {
			snprintf(err, errsz, "cannot render the status");
			state_writer_release(&w);
			goto out;
		}
		fwrite(buf, 1, len, out);
	} else {
		text_writer(out, &w, found);
	}
	state_writer_release(&w);
	rc = 0;
out:
	if (g)
		yajl_gen_free(g);
	return rc;
}

int cmd_status(struct config *cfg, const struct cli *cli)
{
	const struct projection *projs[MAX_RUNNERS + 1];
	char err[1024];
	struct state *st;
	int n, rc;

	/* --projection narrows it */
	rc = selected_projections(cfg, projs, &n);
	if (rc)
		return rc;
	projs[n] = NULL;
	st = state_open(cfg->pg, err, sizeof(err));
	if (!st)
		return die(1, "%s", err);
	rc = print_status(st, projs, cli->json, stdout, err, sizeof(err)) ? die(1, "%s", err) : 0;
	state_close(st);
	return rc;
}
