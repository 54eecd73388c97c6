/* Common includes for cmocka unit tests (cmocka.h needs these first). */
#ifndef KG_TEST_H
#define KG_TEST_H
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#endif
