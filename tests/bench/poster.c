/*
 * bench-poster: the benchmark's ceiling. Posts pre-rendered _bulk bodies to
 * a search node, without PostgreSQL, as fast as the node takes them.
 *
 *   bench-poster BASE_URL MANIFEST
 *
 * MANIFEST has one line per body, in the order it was sent:
 *
 *   INDEX QUEUE ACTIONS PATH
 *
 * Bodies of one QUEUE go one at a time, in file order (like one esbridge
 * lane); the queues run concurrently on one libcurl multi handle. Every
 * body is read into memory before the clock starts. A response must be
 * HTTP 200 with "errors":false. Prints one JSON line on stdout: requests,
 * actions, bytes, seconds (first send to last answer), failed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#define FILTER "filter_path=errors,items.*.status,items.*.error.type,items.*.error.reason"

struct body {
	char *data;
	size_t len;
	long actions;
	char url[1024];
};

struct queue {
	char name[256];
	struct body *bodies;
	size_t n, cap, next;
	CURL *easy;
	char *resp;
	size_t resp_len, resp_cap;
	struct curl_slist *hdrs;
	char errbuf[CURL_ERROR_SIZE];
};

static struct queue *queues;
static size_t n_queues, cap_queues;

static void die(const char *what)
{
	fprintf(stderr, "bench-poster: %s\n", what);
	exit(1);
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n);
	if (!p)
		die("out of memory");
	return p;
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *data = NULL;
	size_t cap = 0, n = 0, got;

	if (!f) {
		fprintf(stderr, "bench-poster: %s: %s\n", path, strerror(errno));
		exit(1);
	}
	do {
		if (cap - n < 65536) {
			cap = cap ? cap * 2 : 1 << 20;
			data = xrealloc(data, cap);
		}
		got = fread(data + n, 1, cap - n, f);
		n += got;
	} while (got > 0);
	if (ferror(f))
		die("read error");
	fclose(f);
	*len = n;
	return data;
}

static struct queue *queue_get(const char *name)
{
	for (size_t i = 0; i < n_queues; i++)
		if (!strcmp(queues[i].name, name))
			return &queues[i];
	if (n_queues == cap_queues) {
		cap_queues = cap_queues ? cap_queues * 2 : 8;
		queues = xrealloc(queues, cap_queues * sizeof(*queues));
	}
	memset(&queues[n_queues], 0, sizeof(*queues));
	snprintf(queues[n_queues].name, sizeof(queues[n_queues].name), "%s", name);
	return &queues[n_queues++];
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct queue *q = arg;
	size_t n = size * nmemb;

	if (q->resp_len + n + 1 > q->resp_cap) {
		q->resp_cap = (q->resp_len + n + 1) * 2;
		q->resp = xrealloc(q->resp, q->resp_cap);
	}
	memcpy(q->resp + q->resp_len, ptr, n);
	q->resp_len += n;
	q->resp[q->resp_len] = '\0';
	return n;
}

static void start(CURLM *multi, struct queue *q)
{
	struct body *b = &q->bodies[q->next];

	q->resp_len = 0;
	curl_easy_setopt(q->easy, CURLOPT_URL, b->url);
	curl_easy_setopt(q->easy, CURLOPT_POSTFIELDS, b->data);
	curl_easy_setopt(q->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)b->len);
	if (curl_multi_add_handle(multi, q->easy) != CURLM_OK)
		die("curl_multi_add_handle failed");
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	char line[4096], index[256], qname[256], path[2048];
	long actions, total_actions = 0, requests = 0, failed = 0;
	size_t total_bytes = 0;
	int running = 0, active = 0;
	double t0, t1;
	CURLM *multi;
	FILE *mf;

	if (argc != 3) {
		fprintf(stderr, "usage: bench-poster BASE_URL MANIFEST\n");
		return 2;
	}
	mf = fopen(argv[2], "r");
	if (!mf)
		die("cannot open the manifest");
	while (fgets(line, sizeof(line), mf)) {
		struct queue *q;
		struct body *b;

		if (sscanf(line, "%255s %255s %ld %2047s", index, qname, &actions, path) != 4)
			die("bad manifest line");
		q = queue_get(qname);
		if (q->n == q->cap) {
			q->cap = q->cap ? q->cap * 2 : 64;
			q->bodies = xrealloc(q->bodies, q->cap * sizeof(*q->bodies));
		}
		b = &q->bodies[q->n++];
		b->data = read_file(path, &b->len);
		b->actions = actions;
		snprintf(b->url, sizeof(b->url), "%s/%s/_bulk?%s", argv[1], index, FILTER);
		total_actions += actions;
		total_bytes += b->len;
	}
	fclose(mf);

	if (curl_global_init(CURL_GLOBAL_DEFAULT))
		die("curl_global_init failed");
	multi = curl_multi_init();
	if (!multi)
		die("curl_multi_init failed");
	for (size_t i = 0; i < n_queues; i++) {
		struct queue *q = &queues[i];
		q->easy = curl_easy_init();
		q->hdrs = curl_slist_append(NULL, "Content-Type: application/x-ndjson");
		if (!q->easy || !q->hdrs)
			die("out of memory");
		curl_easy_setopt(q->easy, CURLOPT_HTTPHEADER, q->hdrs);
		curl_easy_setopt(q->easy, CURLOPT_WRITEFUNCTION, on_data);
		curl_easy_setopt(q->easy, CURLOPT_WRITEDATA, q);
		curl_easy_setopt(q->easy, CURLOPT_PRIVATE, q);
		curl_easy_setopt(q->easy, CURLOPT_ERRORBUFFER, q->errbuf);
		curl_easy_setopt(q->easy, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(q->easy, CURLOPT_TIMEOUT, 300L);
		curl_easy_setopt(q->easy, CURLOPT_ACCEPT_ENCODING, "");
	}

	t0 = now();
	for (size_t i = 0; i < n_queues; i++)
		if (queues[i].n) {
			start(multi, &queues[i]);
			active++;
		}
	while (active) {
		CURLMsg *msg;
		int left;

		if (curl_multi_perform(multi, &running) != CURLM_OK)
			die("curl_multi_perform failed");
		while ((msg = curl_multi_info_read(multi, &left))) {
			struct queue *q;
			char *priv;
			long status = 0;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
			q = (struct queue *)(void *)priv;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
			curl_multi_remove_handle(multi, msg->easy_handle);
			if (msg->data.result != CURLE_OK) {
				fprintf(stderr, "bench-poster: %s: %s\n", q->bodies[q->next].url, q->errbuf);
				return 1;
			}
			requests++;
			if (status != 200 || !q->resp || !strstr(q->resp, "\"errors\":false")) {
				if (!failed)
					fprintf(stderr, "bench-poster: HTTP %ld: %.300s\n", status,
						q->resp ? q->resp : "");
				failed++;
			}
			if (++q->next < q->n)
				start(multi, q);
			else
				active--;
		}
		if (active && curl_multi_poll(multi, NULL, 0, 1000, NULL) != CURLM_OK)
			die("curl_multi_poll failed");
	}
	t1 = now();

	printf("{\"requests\": %ld, \"actions\": %ld, \"bytes\": %zu, \"seconds\": %.6f, \"failed\": %ld}\n",
	       requests, total_actions, total_bytes, t1 - t0, failed);
	for (size_t i = 0; i < n_queues; i++) {
		for (size_t j = 0; j < queues[i].n; j++)
			free(queues[i].bodies[j].data);
		free(queues[i].bodies);
		free(queues[i].resp);
		curl_slist_free_all(queues[i].hdrs);
		curl_easy_cleanup(queues[i].easy);
	}
	free(queues);
	curl_multi_cleanup(multi);
	curl_global_cleanup();
	return failed ? 1 : 0;
}
