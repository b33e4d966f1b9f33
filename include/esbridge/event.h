#ifndef ESBRIDGE_EVENT_H
#define ESBRIDGE_EVENT_H

#include <stddef.h>
#include <stdint.h>

/*
 * A place in the event store's commit order: events are read in
 * (transaction_id, global_position) order, and a checkpoint is the pair of
 * the last event applied. {0, 0} is "before everything".
 */
struct position {
	uint64_t txid;
	int64_t pos;
};

static inline int position_cmp(struct position a, struct position b)
{
	if (a.txid != b.txid)
		return a.txid < b.txid ? -1 : 1;
	if (a.pos != b.pos)
		return a.pos < b.pos ? -1 : 1;
	return 0;
}

/*
 * One row of the events table. The strings point into the batch that
 * produced the event (see store.h) and live as long as it does.
 */
struct event {
	struct position at;
	const char *stream_id;
	const char *type;
	const char *data;        /* jsonb as text, NUL-terminated */
	size_t data_len;
	const char *created_at;  /* the created_at column, ISO-8601 in UTC */
	int32_t version;
};

#endif
