/* Common includes for cmocka unit tests. */
#ifndef KG_TEST_H
#define KG_TEST_H
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#endif
