#include "esbridge/projection.h"

#include <stdio.h>
#include <string.h>

extern const struct projection projection_products;

const struct projection *const projection_registry[] = {
	&projection_products,
	NULL,
};

const struct projection *projection_find(const char *name)
{
	for (const struct projection *const *p = projection_registry; *p; p++)
		if (!strcmp((*p)->name, name))
			return *p;
	return NULL;
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

int projection_get_id(yajl_val data, const char *key, struct buf *id, char *err, size_t errsz)
{
	yajl_val v = projection_member(data, key);

	buf_reset(id);
	if (!v) {
		snprintf(err, errsz, "missing field '%s'", key);
		return PROJECTION_REJECT;
	}
	if (YAJL_IS_STRING(v) && v->u.string[0]) {
		if (strlen(v->u.string) > 512) {
			snprintf(err, errsz, "field '%s' is longer than 512 bytes", key);
			return PROJECTION_REJECT;
		}
		(void)buf_append_str(id, v->u.string);
	} else if (YAJL_IS_INTEGER(v)) {
		(void)buf_append_str(id, v->u.number.r);
	} else {
		snprintf(err, errsz, "field '%s' must be a non-empty string or an integer", key);
		return PROJECTION_REJECT;
	}
	if (buf_error(id)) {
		snprintf(err, errsz, "out of memory");
		return -2;
	}
	return 0;
}
