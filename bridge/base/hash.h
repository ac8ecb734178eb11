/* The one string hash: FNV-1a, cheap and stable across builds (topics and
 * the default client id depend on its values), good enough to keep ids
 * with a shared prefix apart; not a defence against chosen collisions.
 * Chain calls by passing the last result as h. */
#ifndef C2M_HASH_H
#define C2M_HASH_H

#include <stddef.h>
#include <stdint.h>

#define HASH32_INIT 2166136261u
#define HASH64_INIT 14695981039346656037ULL

uint32_t hash32(uint32_t h, const void *data, size_t len);
uint64_t hash64(uint64_t h, const void *data, size_t len);

#endif
