#include "esbridge/projection.h"

#include <stdio.h>
#include <string.h>

#include "esbridge/json.h"

extern const struct projection projection_products;
extern const struct projection projection_orders;
extern const struct projection projection_daily_sales;
extern const struct projection projection_customer_activity;

const struct projection *const projection_registry[] = {
	&projection_products,
	&projection_orders,
	&projection_daily_sales,
	&projection_customer_activity,
	NULL,
};

const struct projection *projection_find(const char *name)
{
	for (const struct projection *const *p = projection_registry; *p; p++)
		if (!strcmp((*p)->name, name))
			return *p;
	return NULL;
}

size_t projection_n_indices(const struct projection *p)
{
	size_t n = 0;

	if (!p->indices)
		return 1;
	while (p->indices[n] && n < PROJECTION_MAX_INDICES)
		n++;
	return n;
}

const char *projection_alias(const struct projection *p, size_t slot)
{
	return p->indices ? p->indices[slot] : p->name;
}

int projection_doc_id(const struct projection *p, const struct event *ev, yajl_val data,
		      size_t slot, struct buf *id, char *err, size_t errsz)
{
	if (p->doc_id_in)
		return p->doc_id_in(ev, data, slot, id, err, errsz);
	return slot == 0 ? p->doc_id(ev, data, id, err, errsz) : PROJECTION_SKIP;
}

int projection_unknown_type(const struct event *ev, char *err, size_t errsz)
{
	char shown[65];

	json_utf8_show(shown, sizeof(shown), ev->type);
	snprintf(err, errsz, "unknown event type '%s'", shown);
	return PROJECTION_REJECT;
}

yajl_val projection_member(yajl_val obj, const char *key)
{
	if (!obj || !YAJL_IS_OBJECT(obj))
		return NULL;
	for (size_t i = 0; i < obj->u.object.len; i++)
		if (!strcmp(obj->u.object.keys[i], key))
			return obj->u.object.values[i];
	return NULL;
}

/* What a JSON value is, for messages. */
static const char *json_kind(yajl_val v)
{
	if (!v)
		return "nothing";
	switch (v->type) {
	case yajl_t_string:
		return "a string";
	case yajl_t_number:
		return "a number";
	case yajl_t_object:
		return "an object";
	case yajl_t_array:
		return "an array";
	case yajl_t_true:
	case yajl_t_false:
		return "a boolean";
	case yajl_t_null:
		return "null";
	case yajl_t_any:
		break;
	}
	return "an unknown value";
}

int projection_get_id(yajl_val data, const char *key, struct buf *id, char *err, size_t errsz)
{
	yajl_val v;

	buf_reset(id);
	if (!data || !YAJL_IS_OBJECT(data)) {
		snprintf(err, errsz, "event data must be a JSON object, not %s", json_kind(data));
		return PROJECTION_REJECT;
	}
	if (projection_get_id_value(data, key, &v, err, errsz)) {
		if (!projection_member(data, key))
			snprintf(err, errsz, "missing field '%s'", key);
		return PROJECTION_REJECT;
	}
	(void)buf_append_str(id, YAJL_IS_STRING(v) ? v->u.string : v->u.number.r);
	if (buf_error(id)) {
		snprintf(err, errsz, "out of memory");
		return -2;
	}
	return 0;
}

int projection_get_cents(yajl_val data, const char *key, int64_t *cents, char *err, size_t errsz)
{
	yajl_val v = projection_member(data, key);
	const char *s;
	int64_t whole = 0, frac = 0;
	int digits = 0, decimals = 0;
	bool neg = false;

	if (!v) {
		snprintf(err, errsz, "missing field '%s'", key);
		return PROJECTION_REJECT;
	}
	if (!YAJL_IS_NUMBER(v)) {
		snprintf(err, errsz, "field '%s' must be a number", key);
		return PROJECTION_REJECT;
	}
	s = v->u.number.r;
	if (*s == '-') {
		neg = true;
		s++;
	}
	for (; *s >= '0' && *s <= '9'; s++) {
		if (++digits > 13)
			goto too_big;
		whole = whole * 10 + (*s - '0');
	}
	if (*s == '.') {
		for (s++; *s >= '0' && *s <= '9'; s++) {
			if (++decimals > 2) {
				/* trailing zeros are harmless: 1.500 is 1.50 */
				if (*s != '0')
					goto bad_scale;
				continue;
			}
			frac = frac * 10 + (*s - '0');
		}
		if (decimals == 1)
			frac *= 10;
	}
	if (*s || digits == 0) {
		snprintf(err, errsz, "field '%s' must be a plain decimal number (no exponent)", key);
		return PROJECTION_REJECT;
	}
	*cents = (whole * 100 + frac) * (neg ? -1 : 1);
	return 0;
too_big:
	snprintf(err, errsz, "field '%s' is too large for an amount of money", key);
	return PROJECTION_REJECT;
bad_scale:
	snprintf(err, errsz, "field '%s' has more than two decimals", key);
	return PROJECTION_REJECT;
}

int projection_get_int(yajl_val data, const char *key, long long min, long long max,
		       long long *out, char *err, size_t errsz)
{
	yajl_val v = projection_member(data, key);

	if (!v) {
		snprintf(err, errsz, "missing field '%s'", key);
		return PROJECTION_REJECT;
	}
	if (!YAJL_IS_INTEGER(v) || YAJL_GET_INTEGER(v) < min || YAJL_GET_INTEGER(v) > max) {
		snprintf(err, errsz, "field '%s' must be a whole number from %lld to %lld", key, min, max);
		return PROJECTION_REJECT;
	}
	*out = YAJL_GET_INTEGER(v);
	return 0;
}

int projection_get_id_value(yajl_val data, const char *key, yajl_val *out, char *err, size_t errsz)
{
	yajl_val v = projection_member(data, key);

	if (!v || !((YAJL_IS_STRING(v) && v->u.string[0]) || YAJL_IS_INTEGER(v))) {
		snprintf(err, errsz, "field '%s' must be a non-empty string or an integer", key);
		return PROJECTION_REJECT;
	}
	if (YAJL_IS_STRING(v) && strlen(v->u.string) > PROJECTION_MAX_ID_BYTES) {
		snprintf(err, errsz, "field '%s' is longer than %d bytes", key, PROJECTION_MAX_ID_BYTES);
		return PROJECTION_REJECT;
	}
	*out = v;
	return 0;
}

int projection_get_opt_string(yajl_val data, const char *key, yajl_val *out, char *err, size_t errsz)
{
	bool bad;

	*out = projection_get_string(data, key, false, &bad, err, errsz);
	return bad ? PROJECTION_REJECT : 0;
}

yajl_val projection_get_string(yajl_val data, const char *key, bool required, bool *bad,
			       char *err, size_t errsz)
{
	yajl_val v = projection_member(data, key);

	*bad = false;
	if (v && YAJL_IS_STRING(v))
		return v;
	if ((!v || YAJL_IS_NULL(v)) && !required)
		return NULL;
	*bad = true;
	if (!v)
		snprintf(err, errsz, "missing field '%s'", key);
	else
		snprintf(err, errsz, "field '%s' must be a string", key);
	return NULL;
}

static bool two_digits(const char *s, int *out)
{
	if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9')
		return false;
	*out = (s[0] - '0') * 10 + (s[1] - '0');
	return true;
}

static int days_in(int y, int m)
{
	static const int d[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

	return m == 2 && leap ? 29 : d[m - 1];
}

bool projection_date(const char *s, char utc_day[11])
{
	char own[11];
	int y1, y2, mo, d, h = 0, mi = 0, sec, oh = 0, om = 0, sign = 0;
	int y, minutes;

	if (!two_digits(s, &y1) || !two_digits(s + 2, &y2) || s[4] != '-' || !two_digits(s + 5, &mo) ||
	    s[7] != '-' || !two_digits(s + 8, &d))
		return false;
	y = y1 * 100 + y2;
	if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > days_in(y, mo))
		return false;
	s += 10;
	if (*s) {
		if (s[0] != 'T' || !two_digits(s + 1, &h) || s[3] != ':' || !two_digits(s + 4, &mi) ||
		    h > 23 || mi > 59)
			return false;
		s += 6;
		if (s[0] == ':') {
			if (!two_digits(s + 1, &sec) || sec > 59)
				return false;
			s += 3;
			if (s[0] == '.') {
				const char *f = ++s;
				while (*s >= '0' && *s <= '9')
					s++;
				if (s == f || s - f > 9)
					return false;
			}
		}
		if (s[0] == '+' || s[0] == '-') {
			if (!two_digits(s + 1, &oh) || s[3] != ':' || !two_digits(s + 4, &om) || s[6] ||
			    om > 59 || oh * 60 + om > 18 * 60)
				return false;
			sign = s[0] == '+' ? 1 : -1;
		} else if (s[0] && (s[0] != 'Z' || s[1])) {
			return false;
		}
	}
	if (!utc_day)
		utc_day = own;
	/* local time minus the offset: at most one day either way */
	minutes = h * 60 + mi - sign * (oh * 60 + om);
	if (minutes < 0 && --d == 0) {
		if (--mo == 0) {
			mo = 12;
			y--;
		}
		d = days_in(y, mo);
	} else if (minutes >= 24 * 60 && ++d > days_in(y, mo)) {
		d = 1;
		if (++mo == 13) {
			mo = 1;
			y++;
		}
	}
	if (y < 1 || y > 9999)
		return false;
	snprintf(utc_day, 11, "%04d-%02d-%02d", y, mo, d);
	return true;
}
