/* Small text helpers shared by the parsers and the configuration. */
#ifndef FERRY_COMMON_TEXT_H
#define FERRY_COMMON_TEXT_H

/** The value of an ASCII hex digit (0-15), or -1. Any thread. */
int text_hex_value(int c);

/** Call fn for each blank-separated word of value (a copy is split, so value is
 * not changed). Stops at and returns the first non-zero result of fn, else 0. */
int text_each_word(const char *value, int (*fn)(const char *word, void *arg), void *arg);

#endif
