#include "esbridge/es.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "esbridge/log.h"

#define RESPONSE_LIMIT ((size_t)256 << 20)

struct es_client {
	struct ev_loop *loop;
	CURLM *multi;
	ev_timer timer;
	char *base;
	char redacted[512];
	char *ca_file;
	bool insecure;
	long timeout_ms;
	struct curl_slist *hdr_json;
	struct curl_slist *hdr_ndjson;
	struct es_req *reqs;  /* every running request, to abort on free */
};

struct es_sock {
	ev_io io;
	curl_socket_t fd;
	struct es_client *c;
};

struct es_req {
	struct es_client *c;
	CURL *easy;
	char *body;
	struct buf resp;
	es_done_fn done;
	void *arg;
	char errbuf[CURL_ERROR_SIZE];
	struct es_req *prev, *next;
};

static int curl_global_ready;

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct buf *b = userdata;
	size_t n = size * nmemb;

	if (buf_append(b, ptr, n))
		return 0; /* makes libcurl fail the transfer with a write error */
	return n;
}

static void one_line(char *s)
{
	size_t n = strlen(s);

	while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
		s[--n] = '\0';
	for (; *s; s++)
		if (*s == '\n')
			*s = ' ';
}

static int setup_easy(struct es_client *c, CURL *e, const char *method, const char *path,
		      const char *body, size_t len, bool ndjson, struct buf *resp, char *errbuf)
{
	char url[2048];
	int n = snprintf(url, sizeof(url), "%s%s", c->base, path);
	CURLcode rc = CURLE_OK;

	if (n < 0 || (size_t)n >= sizeof(url))
		return -1;
#define SET(opt, val) do { if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val); } while (0)
	SET(CURLOPT_URL, url);
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_WRITEFUNCTION, write_cb);
	SET(CURLOPT_WRITEDATA, resp);
	SET(CURLOPT_ERRORBUFFER, errbuf);
	SET(CURLOPT_TIMEOUT_MS, c->timeout_ms);
	SET(CURLOPT_CONNECTTIMEOUT_MS, 10000L);
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
	SET(CURLOPT_HTTPHEADER, ndjson ? c->hdr_ndjson : c->hdr_json);
	SET(CURLOPT_ACCEPT_ENCODING, "");
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	SET(CURLOPT_SSL_VERIFYPEER, c->insecure ? 0L : 1L);
	SET(CURLOPT_SSL_VERIFYHOST, c->insecure ? 0L : 2L);
	if (c->ca_file)
		SET(CURLOPT_CAINFO, c->ca_file);
	if (body) {
		SET(CURLOPT_POSTFIELDS, body);
		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	}
	if (strcmp(method, body ? "POST" : "GET") != 0)
		SET(CURLOPT_CUSTOMREQUEST, method);
#undef SET
	return rc == CURLE_OK ? 0 : -1;
}

static void req_free(struct es_req *r)
{
	if (r->easy)
		curl_easy_cleanup(r->easy);
	free(r->body);
	buf_release(&r->resp);
	free(r);
}

static void unlink_req(struct es_client *c, struct es_req *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		c->reqs = r->next;
	if (r->next)
		r->next->prev = r->prev;
	r->prev = r->next = NULL;
}

/* Hands every finished transfer to its callback. */
static void sweep(struct es_client *c)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(c->multi, &left))) {
		struct es_req *r = NULL;
		struct es_response resp;
		char what[CURL_ERROR_SIZE + 64];

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
		curl_multi_remove_handle(c->multi, msg->easy_handle);
		memset(&resp, 0, sizeof(resp));
		if (msg->data.result == CURLE_OK) {
			curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &resp.status);
		} else {
			snprintf(what, sizeof(what), "%s",
				 r->errbuf[0] ? r->errbuf : curl_easy_strerror(msg->data.result));
			one_line(what);
			resp.transport_error = true;
			resp.error = what;
		}
		resp.body = r->resp.data;
		resp.len = r->resp.len;
		unlink_req(c, r);
		if (r->done)
			r->done(r->arg, &resp);
		req_free(r);
	}
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct es_sock *s = (struct es_sock *)w;
	struct es_client *c = s->c;
	int action = 0, running;

	(void)loop;
	if (revents & EV_READ)
		action |= CURL_CSELECT_IN;
	if (revents & EV_WRITE)
		action |= CURL_CSELECT_OUT;
	curl_multi_socket_action(c->multi, s->fd, action, &running);
	sweep(c);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct es_client *c = (struct es_client *)((char *)w - offsetof(struct es_client, timer));
	int running;

	(void)loop;
	(void)revents;
	curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	sweep(c);
}

static int socket_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct es_client *c = userp;
	struct es_sock *s = socketp;
	int events = 0;

	(void)e;
	if (what == CURL_POLL_REMOVE) {
		if (s) {
			ev_io_stop(c->loop, &s->io);
			curl_multi_assign(c->multi, fd, NULL);
			free(s);
		}
		return 0;
	}
	if (what & CURL_POLL_IN)
		events |= EV_READ;
	if (what & CURL_POLL_OUT)
		events |= EV_WRITE;
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s)
			return -1;
		s->fd = fd;
		s->c = c;
		ev_io_init(&s->io, io_cb, fd, events);
		curl_multi_assign(c->multi, fd, s);
	} else {
		ev_io_stop(c->loop, &s->io);
		ev_io_set(&s->io, fd, events);
	}
	ev_io_start(c->loop, &s->io);
	return 0;
}

static int timerfn_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct es_client *c = userp;

	(void)multi;
	ev_timer_stop(c->loop, &c->timer);
	if (timeout_ms >= 0) {
		/* 0 means "now": never call libcurl from here, let the loop do it */
		double t = timeout_ms == 0 ? 0.001 : (double)timeout_ms / 1000.0;
		ev_timer_set(&c->timer, t, 0.0);
		ev_timer_start(c->loop, &c->timer);
	}
	return 0;
}

struct es_client *es_client_new(struct ev_loop *loop, const struct config *cfg,
				char *err, size_t errsz)
{
	struct es_client *c;
	size_t blen;

	if (!curl_global_ready) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
			snprintf(err, errsz, "cannot initialise libcurl");
			return NULL;
		}
		curl_global_ready = 1;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errsz, "out of memory");
		return NULL;
	}
	c->loop = loop;
	c->base = strdup(cfg->es);
	c->ca_file = *cfg->ca_file ? strdup(cfg->ca_file) : NULL;
	c->insecure = cfg->insecure;
	c->timeout_ms = (long)(cfg->request_timeout * 1000.0);
	c->hdr_json = curl_slist_append(NULL, "Content-Type: application/json");
	if (c->hdr_json)
		c->hdr_json = curl_slist_append(c->hdr_json, "Expect:");
	c->hdr_ndjson = curl_slist_append(NULL, "Content-Type: application/x-ndjson");
	if (c->hdr_ndjson)
		c->hdr_ndjson = curl_slist_append(c->hdr_ndjson, "Expect:");
	c->multi = curl_multi_init();
	if (!c->base || (*cfg->ca_file && !c->ca_file) || !c->hdr_json || !c->hdr_ndjson || !c->multi) {
		snprintf(err, errsz, "out of memory");
		es_client_free(c);
		return NULL;
	}
	blen = strlen(c->base);
	while (blen && c->base[blen - 1] == '/')
		c->base[--blen] = '\0';
	config_redact_url(c->base, c->redacted, sizeof(c->redacted));
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timerfn_cb);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
	ev_init(&c->timer, timer_cb);
	return c;
}

void es_client_free(struct es_client *c)
{
	if (!c)
		return;
	while (c->reqs) {
		struct es_req *r = c->reqs;
		unlink_req(c, r);
		curl_multi_remove_handle(c->multi, r->easy);
		req_free(r);
	}
	if (c->loop)
		ev_timer_stop(c->loop, &c->timer);
	if (c->multi)
		curl_multi_cleanup(c->multi);
	curl_slist_free_all(c->hdr_json);
	curl_slist_free_all(c->hdr_ndjson);
	free(c->base);
	free(c->ca_file);
	free(c);
}

int es_request(struct es_client *c, const char *method, const char *path,
	       char *body, size_t len, bool ndjson, es_done_fn done, void *arg)
{
	struct es_req *r = calloc(1, sizeof(*r));

	if (!r) {
		free(body);
		return -1;
	}
	r->c = c;
	r->body = body;
	r->done = done;
	r->arg = arg;
	buf_init(&r->resp, RESPONSE_LIMIT);
	r->easy = curl_easy_init();
	if (!r->easy || setup_easy(c, r->easy, method, path, body, len, ndjson, &r->resp, r->errbuf) ||
	    curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r) != CURLE_OK ||
	    curl_multi_add_handle(c->multi, r->easy) != CURLM_OK) {
		req_free(r);
		return -1;
	}
	r->next = c->reqs;
	if (c->reqs)
		c->reqs->prev = r;
	c->reqs = r;
	return 0;
}

int es_request_sync(struct es_client *c, const char *method, const char *path,
		    const char *body, size_t len, long *status, struct buf *resp,
		    char *err, size_t errsz)
{
	char errbuf[CURL_ERROR_SIZE] = "";
	CURL *e = curl_easy_init();
	CURLcode rc;

	*status = 0;
	if (!e) {
		snprintf(err, errsz, "out of memory");
		return -1;
	}
	if (setup_easy(c, e, method, path, body, len, false, resp, errbuf)) {
		snprintf(err, errsz, "cannot set up a request to %s", c->redacted);
		curl_easy_cleanup(e);
		return -1;
	}
	rc = curl_easy_perform(e);
	if (rc != CURLE_OK) {
		snprintf(err, errsz, "%s %s%s: %s", method, c->redacted, path,
			 errbuf[0] ? errbuf : curl_easy_strerror(rc));
		one_line(err);
		curl_easy_cleanup(e);
		return -1;
	}
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
	curl_easy_cleanup(e);
	return 0;
}

