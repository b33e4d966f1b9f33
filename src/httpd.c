#include "esbridge/httpd.h"

#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "esbridge/log.h"

#define REQUEST_MAX HTTPD_REQUEST_MAX
#define CONN_MAX 64
#define CONN_TIMEOUT 10.0

struct conn {
	struct httpd *h;
	struct conn *prev, *next;
	ev_io io;
	ev_timer timer;
	char req[REQUEST_MAX + 1];
	size_t n;
	char *out;        /* the whole response, once known */
	size_t out_len, sent;
};

struct httpd {
	struct ev_loop *loop;
	int fd;
	int port;
	ev_io accept_io;
	httpd_handler_fn fn;
	void *arg;
	struct conn *conns;
	int n_conns;
};

static void conn_close(struct conn *c)
{
	struct httpd *h = c->h;

	ev_io_stop(h->loop, &c->io);
	ev_timer_stop(h->loop, &c->timer);
	close(c->io.fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		h->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	h->n_conns--;
	free(c->out);
	free(c);
}

static const char *reason_of(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 503: return "Service Unavailable";
	default: return "Error";
	}
}

/* Builds the response; -1 on no memory. */
static int respond(struct conn *c, int status, const char *type, const char *body, size_t len,
		   bool head)
{
	struct buf b = BUF_INIT((size_t)64 << 20);

	(void)buf_printf(&b,
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			 "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
			 status, reason_of(status), type, len);
	if (!head)
		(void)buf_append(&b, body, len);
	if (buf_error(&b)) {
		buf_release(&b);
		return -1;
	}
	c->out = buf_take(&b, &c->out_len);
	return c->out ? 0 : -1;
}

bool httpd_request_complete(const char *req)
{
	return strstr(req, "\r\n\r\n") || strstr(req, "\n\n");
}

int httpd_request_line(const char *req, char *path, size_t pathsz, bool *head)
{
	const char *m = req, *p, *v;
	size_t mlen, plen;

	*head = false;
	if (pathsz)
		path[0] = '\0';
	/* METHOD SP TARGET SP HTTP/1.x */
	mlen = strcspn(m, " \t\r\n");
	p = m + mlen;
	p += strspn(p, " \t");
	plen = strcspn(p, " \t\r\n");
	v = p + plen;
	v += strspn(v, " \t");
	if (!mlen || mlen > 7 || !plen || strncmp(v, "HTTP/1.", 7) || !v[7] || v[7] == '\r' || v[7] == '\n')
		return 400;
	if (mlen == 4 && !strncmp(m, "HEAD", 4))
		*head = true;
	else if (mlen != 3 || strncmp(m, "GET", 3))
		return 405;
	plen = strcspn(p, "? \t\r\n"); /* the path without its query string */
	if (plen >= pathsz)
		plen = pathsz ? pathsz - 1 : 0;
	if (pathsz) {
		memcpy(path, p, plen);
		path[plen] = '\0';
	}
	return 0;
}

/* Answers the request in c->req (complete); -1 to drop the connection. */
static int handle(struct conn *c)
{
	struct httpd *h = c->h;
	char path[512];
	const char *type = "text/plain; charset=utf-8";
	struct buf body = BUF_INIT((size_t)32 << 20);
	bool head;
	int status, rc;

	status = httpd_request_line(c->req, path, sizeof(path), &head);
	if (status == 400)
		return respond(c, 400, type, "bad request\n", 12, false);
	if (status == 405)
		return respond(c, 405, type, "GET or HEAD only\n", 17, false);
	status = h->fn(h->arg, path, &body, &type);
	if (buf_error(&body)) {
		buf_release(&body);
		return -1;
	}
	rc = respond(c, status, type, body.data ? body.data : "", body.len, head);
	buf_release(&body);
	return rc;
}

static void conn_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = (struct conn *)((char *)w - offsetof(struct conn, io));

	(void)revents;
	if (!c->out) {
		ssize_t n = read(w->fd, c->req + c->n, REQUEST_MAX - c->n);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			conn_close(c);
			return;
		}
		c->n += (size_t)n;
		c->req[c->n] = '\0';
		if (!httpd_request_complete(c->req)) {
			if (c->n == REQUEST_MAX)
				conn_close(c); /* too long: not ours to serve */
			return;
		}
		if (handle(c)) {
			conn_close(c);
			return;
		}
		ev_io_stop(loop, w);
		ev_io_set(w, w->fd, EV_WRITE);
		ev_io_start(loop, w);
		return;
	}
	while (c->sent < c->out_len) {
		ssize_t n = write(w->fd, c->out + c->sent, c->out_len - c->sent);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0)
			break;
		c->sent += (size_t)n;
	}
	conn_close(c);
}

static void conn_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = (struct conn *)((char *)w - offsetof(struct conn, timer));

	(void)loop;
	(void)revents;
	conn_close(c);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct httpd *h = (struct httpd *)((char *)w - offsetof(struct httpd, accept_io));

	(void)revents;
	for (;;) {
		struct conn *c;
		int fd = accept(w->fd, NULL, NULL);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				log_warn("metrics endpoint: accept: %s", strerror(errno));
			return;
		}
		if (h->n_conns >= CONN_MAX || fcntl(fd, F_SETFL, O_NONBLOCK) < 0 ||
		    !(c = calloc(1, sizeof(*c)))) {
			close(fd);
			continue;
		}
		c->h = h;
		c->next = h->conns;
		if (h->conns)
			h->conns->prev = c;
		h->conns = c;
		h->n_conns++;
		ev_io_init(&c->io, conn_cb, fd, EV_READ);
		ev_timer_init(&c->timer, conn_timeout_cb, CONN_TIMEOUT, 0.0);
		ev_io_start(loop, &c->io);
		ev_timer_start(loop, &c->timer);
	}
}

/* Splits "HOST:PORT" or "[V6]:PORT"; -1 if malformed. */
static int split_address(const char *address, char *host, size_t hostsz, char *port, size_t portsz)
{
	const char *colon;
	size_t hl;

	if (address[0] == '[') {
		const char *end = strchr(address, ']');
		if (!end || end[1] != ':')
			return -1;
		hl = (size_t)(end - address - 1);
		address++;
		colon = end + 1;
	} else {
		colon = strrchr(address, ':');
		if (!colon)
			return -1;
		hl = (size_t)(colon - address);
	}
	if (hl == 0 || hl >= hostsz || !colon[1] || strlen(colon + 1) >= portsz)
		return -1;
	memcpy(host, address, hl);
	host[hl] = '\0';
	strcpy(port, colon + 1);
	for (const char *p = port; *p; p++)
		if (*p < '0' || *p > '9')
			return -1;
	return 0;
}

struct httpd *httpd_new(struct ev_loop *loop, const char *address, httpd_handler_fn fn, void *arg,
			char *err, size_t errsz)
{
	char host[256], port[16];
	struct addrinfo hints, *ai = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct httpd *h;
	int fd = -1, one = 1, rc;

	if (split_address(address, host, sizeof(host), port, sizeof(port))) {
		snprintf(err, errsz, "invalid metrics address '%s': want HOST:PORT", address);
		return NULL;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo(host, port, &hints, &ai);
	if (rc) {
		snprintf(err, errsz, "invalid metrics address '%s': %s", address, gai_strerror(rc));
		return NULL;
	}
	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 64) < 0 ||
	    fcntl(fd, F_SETFL, O_NONBLOCK) < 0 || getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
		snprintf(err, errsz, "cannot listen on %s: %s", address, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return NULL;
	}
	freeaddrinfo(ai);
	h = calloc(1, sizeof(*h));
	if (!h) {
		close(fd);
		snprintf(err, errsz, "out of memory");
		return NULL;
	}
	h->loop = loop;
	h->fd = fd;
	h->fn = fn;
	h->arg = arg;
	if (ss.ss_family == AF_INET6)
		h->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	else
		h->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	ev_io_init(&h->accept_io, accept_cb, fd, EV_READ);
	ev_io_start(loop, &h->accept_io);
	return h;
}

int httpd_port(const struct httpd *h)
{
	return h->port;
}

void httpd_free(struct httpd *h)
{
	if (!h)
		return;
	while (h->conns)
		conn_close(h->conns);
	ev_io_stop(h->loop, &h->accept_io);
	close(h->fd);
	free(h);
}
