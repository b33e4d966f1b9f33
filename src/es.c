#include "esbridge/es.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#define ZLIB_CONST
#include <zlib.h>

#include "esbridge/log.h"

#define RESPONSE_LIMIT ((size_t)256 << 20)

/* Smaller bodies are sent as they are: a gzip header and a deflate block
 * cost more than they save. */
#define COMPRESS_MIN 1024
/* zlib's fastest level: on NDJSON it keeps most of the gain of level 6 at a
 * fraction of the CPU (see README, "Compression"). */
#define COMPRESS_LEVEL 1

/* The request headers: [ndjson][gzip] */
enum { HDR_JSON, HDR_NDJSON, HDR_JSON_GZ, HDR_NDJSON_GZ, N_HDR };

struct es_client {
	struct ev_loop *loop;
	CURLM *multi;
	CURL *sync_easy;      /* kept between blocking requests: its connections are reused */
	ev_timer timer;
	char redacted[512];
	/*
	 * The nodes: requests go round the healthy ones; a node whose request
	 * failed to connect, timed out or answered 502/503/504 is set aside for
	 * a while (1 s, doubling up to 60 s) and tried again after.
	 */
	struct es_node {
		char *url;
		char redacted[512];
		double down_until;
		int failures;
	} nodes[ES_MAX_NODES];
	int n_nodes, next_node;
	char *ca_file;
	bool insecure;
	bool compress;
	const double *timeout;  /* the live setting (SIGHUP may change it), seconds */
	char *user;           /* basic auth, or NULL */
	char *password;       /* secret: wiped on free */
	struct curl_slist *hdr[N_HDR];  /* with "Authorization: ApiKey ..." (secret) when set */
	bool api_key;         /* an API key is sent */
	bool auth_warned;     /* a 401/403 was reported once */
	struct {                       /* for the debug line on free (both kinds of request) */
		unsigned long requests;        /* ended, with or without a response */
		unsigned long connects;        /* new connections they opened (the others reused one) */
		unsigned long long body_bytes; /* request bodies, before compression */
		unsigned long long sent_bytes; /* the same as sent */
	} stats;
	struct es_req *reqs;  /* every running request, to abort on free */
};

struct es_sock {
	ev_io io;
	curl_socket_t fd;
	struct es_client *c;
};

struct es_req {
	struct es_client *c;
	int node;
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

static void free_secret_list(struct curl_slist *l)
{
	for (struct curl_slist *i = l; i; i = i->next)
		config_wipe(i->data, strlen(i->data));
	curl_slist_free_all(l);
}

/*
 * `in` gzip-compressed (RFC 1952, what Content-Encoding: gzip names) into
 * `*out` (malloc'd). 0, or -1 when zlib cannot (then nothing to free).
 */
static int gzip_body(const char *in, size_t len, char **out, size_t *outlen)
{
	z_stream zs;
	uLong bound;
	char *z;
	int rc;

	if (len > (size_t)UINT_MAX / 2)
		return -1;
	memset(&zs, 0, sizeof(zs));
	if (deflateInit2(&zs, COMPRESS_LEVEL, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return -1;
	bound = deflateBound(&zs, (uLong)len);
	z = malloc(bound);
	if (!z) {
		deflateEnd(&zs);
		return -1;
	}
	zs.next_in = (const Bytef *)in;
	zs.avail_in = (uInt)len;
	zs.next_out = (Bytef *)z;
	zs.avail_out = (uInt)bound;
	rc = deflate(&zs, Z_FINISH);
	*outlen = (size_t)zs.total_out;
	deflateEnd(&zs);
	if (rc != Z_STREAM_END) {
		free(z);
		return -1;
	}
	*out = z;
	return 0;
}

/*
 * With --compress, points *body at the gzip form of a body of COMPRESS_MIN
 * bytes or more when that is smaller; *gz_out then owns it (the caller
 * frees it, and still owns the original). True when compressed.
 */
static bool maybe_compress(struct es_client *c, const char **body, size_t *len, char **gz_out)
{
	char *z;
	size_t zlen;

	*gz_out = NULL;
	c->stats.body_bytes += *len;
	if (!c->compress || !*body || *len < COMPRESS_MIN || gzip_body(*body, *len, &z, &zlen)) {
		c->stats.sent_bytes += *len;
		return false;
	}
	if (zlen >= *len) {
		free(z);
		c->stats.sent_bytes += *len;
		return false;
	}
	*gz_out = z;
	*body = z;
	*len = zlen;
	c->stats.sent_bytes += zlen;
	return true;
}

/* Says once, at warning level, that the cluster refused our credentials. */
static void note_status(struct es_client *c, long status)
{
	if ((status != 401 && status != 403) || c->auth_warned)
		return;
	c->auth_warned = true;
	log_warn("Elasticsearch at %s answered HTTP %ld (%s): %s", c->redacted, status,
		 status == 401 ? "Unauthorized" : "Forbidden",
		 c->user ? "check ESBRIDGE_ES_USER and the password (ESBRIDGE_ES_PASSWORD or --es-password-file)"
		 : c->api_key ? "check the API key (ESBRIDGE_ES_API_KEY or --es-api-key-file)"
		 : "no credentials are set: ESBRIDGE_ES_USER with ESBRIDGE_ES_PASSWORD, or ESBRIDGE_ES_API_KEY");
}

/* The node for the next request: the next healthy one, else the one back soonest. */
static int pick_node(struct es_client *c, double now)
{
	int best = -1;

	for (int k = 0; k < c->n_nodes; k++) {
		int i = (c->next_node + k) % c->n_nodes;
		if (c->nodes[i].down_until <= now) {
			best = i;
			break;
		}
		if (best < 0 || c->nodes[i].down_until < c->nodes[best].down_until)
			best = i;
	}
	c->next_node = (best + 1) % c->n_nodes;
	return best;
}

/* How a request to node `i` went: sets a failing node aside, brings a node back. */
static void node_outcome(struct es_client *c, int i, bool failed, const char *why, double now)
{
	struct es_node *n = &c->nodes[i];

	if (!failed) {
		if (n->failures && c->n_nodes > 1)
			log_info("Elasticsearch node %s answers again", n->redacted);
		n->failures = 0;
		n->down_until = 0;
		return;
	}
	n->failures++;
	n->down_until = now + (n->failures < 7 ? (double)(1 << (n->failures - 1)) : 60.0);
	if (c->n_nodes > 1)
		log_warn("Elasticsearch node %s set aside for %.0fs: %s", n->redacted, n->down_until - now, why);
}

static bool node_failure_status(long status)
{
	return status == 502 || status == 503 || status == 504;
}

static int setup_easy(struct es_client *c, int node, CURL *e, const char *method, const char *path,
		      const char *body, size_t len, bool ndjson, bool gz, struct buf *resp,
		      char *errbuf)
{
	char url[2048];
	int n = snprintf(url, sizeof(url), "%s%s", c->nodes[node].url, path);
	CURLcode rc = CURLE_OK;

	if (n < 0 || (size_t)n >= sizeof(url))
		return -1;
#define SET(opt, val) do { if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val); } while (0)
	SET(CURLOPT_URL, url);
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_WRITEFUNCTION, write_cb);
	SET(CURLOPT_WRITEDATA, resp);
	SET(CURLOPT_ERRORBUFFER, errbuf);
	SET(CURLOPT_TIMEOUT_MS, (long)(*c->timeout * 1000.0));
	SET(CURLOPT_CONNECTTIMEOUT_MS, 10000L);
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
	SET(CURLOPT_HTTPHEADER, c->hdr[(ndjson ? HDR_NDJSON : HDR_JSON) + (gz ? HDR_JSON_GZ : 0)]);
	if (c->user) {
		SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		SET(CURLOPT_USERNAME, c->user);
		SET(CURLOPT_PASSWORD, c->password);
	}
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

/* libcurl's reason for a failed transfer, one line, with a hint for TLS failures. */
static void describe_failure(CURLcode rc, const char *errbuf, char *out, size_t outsz)
{
	const char *hint = "";

	if (rc == CURLE_PEER_FAILED_VERIFICATION)
		hint = " (TLS certificate verification failed: give the CA that signed the node's "
		       "certificate with --ca-file)";
	else if (rc == CURLE_SSL_CACERT_BADFILE)
		hint = " (TLS certificate verification cannot start: the --ca-file cannot be read "
		       "or holds no certificate)";
	snprintf(out, outsz, "%s%s", errbuf[0] ? errbuf : curl_easy_strerror(rc), hint);
	one_line(out);
}

/* Counts a finished transfer and the connections it had to open. */
static void count_transfer(struct es_client *c, CURL *e)
{
	long connects = 0;

	if (curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK && connects > 0)
		c->stats.connects += (unsigned long)connects;
	c->stats.requests++;
}

/* Hands every finished transfer to its callback. */
static void sweep(struct es_client *c)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(c->multi, &left))) {
		struct es_req *r = NULL;
		struct es_response resp;
		char what[CURL_ERROR_SIZE + 200];

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
		curl_multi_remove_handle(c->multi, msg->easy_handle);
		memset(&resp, 0, sizeof(resp));
		count_transfer(c, r->easy);
		if (msg->data.result == CURLE_OK) {
			curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &resp.status);
			note_status(c, resp.status);
			snprintf(what, sizeof(what), "HTTP %ld", resp.status);
			node_outcome(c, r->node, node_failure_status(resp.status), what, ev_now(c->loop));
		} else {
			describe_failure(msg->data.result, r->errbuf, what, sizeof(what));
			resp.transport_error = true;
			resp.error = what;
			node_outcome(c, r->node, true, what, ev_now(c->loop));
		}
		resp.body = r->resp.data;
		resp.len = r->resp.len;
		unlink_req(c, r);
		if (r->done)
			r->done(r->arg, &resp);
		req_free(r);
	}
}

/* Lets libcurl act on a socket (or its timeout), then reaps what ended. */
static void multi_action(struct es_client *c, curl_socket_t fd, int action)
{
	int running;
	CURLMcode rc = curl_multi_socket_action(c->multi, fd, action, &running);

	if (rc != CURLM_OK)
		log_error("%s: libcurl: %s", c->redacted, curl_multi_strerror(rc));
	sweep(c);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct es_sock *s = (struct es_sock *)w;
	struct es_client *c = s->c;
	int action = 0;

	(void)loop;
	if (revents & EV_READ)
		action |= CURL_CSELECT_IN;
	if (revents & EV_WRITE)
		action |= CURL_CSELECT_OUT;
	multi_action(c, s->fd, action);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct es_client *c = (struct es_client *)((char *)w - offsetof(struct es_client, timer));

	(void)loop;
	(void)revents;
	multi_action(c, CURL_SOCKET_TIMEOUT, 0);
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

/* The secret of `value` (environment) or else of the file `path`; NULL with `err` set. */
static char *load_secret(const char *option, const char *value, const char *path,
			 char *err, size_t errsz)
{
	char *secret = NULL;

	if (*value) {
		secret = strdup(value);
		if (!secret)
			snprintf(err, errsz, "out of memory");
		return secret;
	}
	if (config_read_secret(option, path, &secret, err, errsz))
		return NULL;
	return secret;
}

/* Content type, "Expect:" (no 100-continue wait), then encoding and API key. */
static int build_headers(struct es_client *c, const char *api_key)
{
	static const char *const types[N_HDR] = {
		"Content-Type: application/json", "Content-Type: application/x-ndjson",
		"Content-Type: application/json", "Content-Type: application/x-ndjson",
	};
	char *auth = NULL;
	size_t alen = 0;
	int rc = 0;

	if (api_key) {
		alen = strlen(api_key) + 32;
		auth = malloc(alen);
		if (!auth)
			return -1;
		snprintf(auth, alen, "Authorization: ApiKey %s", api_key);
	}
	for (int i = 0; i < N_HDR && !rc; i++) {
		struct curl_slist *l = curl_slist_append(NULL, types[i]);
		struct curl_slist *t;
		if (l && (t = curl_slist_append(l, "Expect:")))
			l = t;
		else
			rc = -1;
		if (!rc && i >= HDR_JSON_GZ) {
			if ((t = curl_slist_append(l, "Content-Encoding: gzip")))
				l = t;
			else
				rc = -1;
		}
		if (!rc && auth) {
			if ((t = curl_slist_append(l, auth)))
				l = t;
			else
				rc = -1;
		}
		c->hdr[i] = l;
	}
	if (auth) {
		config_wipe(auth, alen);
		free(auth);
	}
	return rc;
}

/* The nodes of `es`, comma-separated URLs; -1 with `err` set. */
static int add_nodes(struct es_client *c, const char *es, char *err, size_t errsz)
{
	/* the URLs may hold user:password: the copy they are cut from is wiped whole */
	size_t ulen = strlen(es), blen;
	char *urls = strdup(es);
	bool oom = !urls;
	char *save = NULL, *tok = urls ? strtok_r(urls, ",", &save) : NULL;

	for (; tok && c->n_nodes < ES_MAX_NODES; tok = strtok_r(NULL, ",", &save)) {
		struct es_node *n = &c->nodes[c->n_nodes];
		n->url = strdup(tok);
		if (!n->url) {
			oom = true;
			break;
		}
		blen = strlen(n->url);
		while (blen && n->url[blen - 1] == '/')
			n->url[--blen] = '\0';
		config_redact_url(n->url, n->redacted, sizeof(n->redacted));
		c->n_nodes++;
	}
	if (urls) {
		config_wipe(urls, ulen);
		free(urls);
	}
	if (oom) {
		snprintf(err, errsz, "out of memory");
		return -1;
	}
	if (!c->n_nodes) {
		snprintf(err, errsz, "missing Elasticsearch URL: set ESBRIDGE_ES or --es");
		return -1;
	}
	/* messages about the cluster as a whole name its first node */
	snprintf(c->redacted, sizeof(c->redacted), "%.480s%s", c->nodes[0].redacted,
		 c->n_nodes > 1 ? " (and others)" : "");
	return 0;
}

/* Basic auth or an API key, and the headers; -1 with `err` set. */
static int set_credentials(struct es_client *c, const struct config *cfg, char *err, size_t errsz)
{
	char *api_key = NULL;
	int rc;

	if (*cfg->es_user) {
		c->user = strdup(cfg->es_user);
		c->password = load_secret("es-password-file", cfg->es_password, cfg->es_password_file,
					  err, errsz);
		if (!c->user || !c->password) {
			if (!c->user)
				snprintf(err, errsz, "out of memory");
			return -1;
		}
	}
	if (*cfg->es_api_key || *cfg->es_api_key_file) {
		api_key = load_secret("es-api-key-file", cfg->es_api_key, cfg->es_api_key_file, err, errsz);
		if (!api_key)
			return -1;
		c->api_key = true;
	}
	rc = build_headers(c, api_key);
	config_free_secret(api_key);
	if (rc) {
		snprintf(err, errsz, "out of memory");
		return -1;
	}
	for (int i = 0; i < c->n_nodes; i++)
		if ((c->user || c->api_key || strchr(c->nodes[i].redacted, '@')) &&
		    strncmp(c->nodes[i].url, "https://", 8))
			log_warn("credentials go to %s over plain http, readable on the network: use https",
				 c->nodes[i].redacted);
	return 0;
}

struct es_client *es_client_new(struct ev_loop *loop, const struct config *cfg,
				char *err, size_t errsz)
{
	struct es_client *c;

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
	c->ca_file = *cfg->ca_file ? strdup(cfg->ca_file) : NULL;
	c->insecure = cfg->insecure;
	c->compress = cfg->compress;
	c->timeout = &cfg->request_timeout;
	c->multi = curl_multi_init();
	c->sync_easy = curl_easy_init();
	if ((*cfg->ca_file && !c->ca_file) || !c->multi || !c->sync_easy) {
		snprintf(err, errsz, "out of memory");
		goto fail;
	}
	if (add_nodes(c, cfg->es, err, errsz) || set_credentials(c, cfg, err, errsz))
		goto fail;
	if (curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb) != CURLM_OK ||
	    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c) != CURLM_OK ||
	    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timerfn_cb) != CURLM_OK ||
	    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c) != CURLM_OK) {
		snprintf(err, errsz, "cannot set up libcurl's multi handle");
		goto fail;
	}
	ev_init(&c->timer, timer_cb);
	return c;
fail:
	es_client_free(c);
	return NULL;
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
	if (c->stats.requests)
		log_debug("%s: %lu requests over %lu new connections; bodies %llu bytes, sent as %llu",
			  c->redacted, c->stats.requests, c->stats.connects, c->stats.body_bytes,
			  c->stats.sent_bytes);
	if (c->loop)
		ev_timer_stop(c->loop, &c->timer);
	if (c->multi)
		curl_multi_cleanup(c->multi);
	if (c->sync_easy)
		curl_easy_cleanup(c->sync_easy);
	for (int i = 0; i < N_HDR; i++)
		free_secret_list(c->hdr[i]);
	free(c->user);
	config_free_secret(c->password);
	for (int i = 0; i < c->n_nodes; i++) {
		config_wipe(c->nodes[i].url, strlen(c->nodes[i].url)); /* may hold user:password */
		free(c->nodes[i].url);
	}
	free(c->ca_file);
	free(c);
}

int es_request(struct es_client *c, const char *method, const char *path,
	       char *body, size_t len, bool ndjson, es_done_fn done, void *arg)
{
	struct es_req *r = calloc(1, sizeof(*r));
	const char *send = body;
	char *gz;
	bool zipped;

	if (!r) {
		free(body);
		return -1;
	}
	zipped = maybe_compress(c, &send, &len, &gz);
	if (zipped) {
		free(body);
		body = gz;
	}
	r->c = c;
	r->body = body;
	r->done = done;
	r->arg = arg;
	buf_init(&r->resp, RESPONSE_LIMIT);
	r->easy = curl_easy_init();
	r->node = pick_node(c, ev_now(c->loop));
	if (!r->easy || setup_easy(c, r->node, r->easy, method, path, body, len, ndjson, zipped, &r->resp, r->errbuf) ||
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
	CURL *e = c->sync_easy;
	CURLcode rc = CURLE_OK;
	char *gz;
	bool zipped;
	size_t resp_len = resp->len;

	*status = 0;
	zipped = maybe_compress(c, &body, &len, &gz);
	/* a setup step: on a node that cannot be reached, the next one at once */
	for (int attempt = 0; attempt < c->n_nodes; attempt++) {
		int node = pick_node(c, ev_time());
		char what[CURL_ERROR_SIZE + 200];

		/* a reset keeps the handle's connections, so setup steps reuse them */
		curl_easy_reset(e);
		errbuf[0] = '\0';
		buf_truncate(resp, resp_len); /* what an earlier attempt wrote goes */
		if (setup_easy(c, node, e, method, path, body, len, false, zipped, resp, errbuf)) {
			snprintf(err, errsz, "cannot set up a request to %s", c->nodes[node].redacted);
			free(gz);
			return -1;
		}
		rc = curl_easy_perform(e);
		count_transfer(c, e);
		if (rc == CURLE_OK) {
			curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
			snprintf(what, sizeof(what), "HTTP %ld", *status);
			node_outcome(c, node, node_failure_status(*status), what, ev_time());
			if (!node_failure_status(*status) || attempt + 1 == c->n_nodes)
				break;
			continue;
		}
		describe_failure(rc, errbuf, what, sizeof(what));
		node_outcome(c, node, true, what, ev_time());
		snprintf(err, errsz, "%s %s%s: %s", method, c->nodes[node].redacted, path, what);
	}
	free(gz);
	/* drops the pointers to this call's buffers; the connections stay */
	curl_easy_reset(e);
	if (rc != CURLE_OK)
		return -1;
	note_status(c, *status);
	return 0;
}
