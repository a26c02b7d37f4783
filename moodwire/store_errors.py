"""What a failed ClickHouse statement means for the caller, decided once for both stores.

Three kinds, by what the caller should do:

* StoreUnavailable: the store can't be used right now (unreachable, overloaded, a timeout, or
  misconfigured: a missing table, a wrong password). Nothing is wrong with the data: hold it and
  retry; a service reports itself not ready meanwhile.
* StoreRejected: the statement or the rows are wrong in themselves (a row ClickHouse can't parse
  or convert, a syntax error in an analyst's query). Retrying the same thing fails the same way.
* StoreError: the base class, for anything else; callers treat an unknown failure of an insert
  by finding out whether single rows are to blame (see scorer.service).

The ClickHouse server (clickhouse-driver's ServerException.code) and chDB ("Code: N." in the
message) report the same numeric error codes, so one table classifies both.
"""

from __future__ import annotations

import re

_CODE_RE = re.compile(r"Code:\s*(\d+)")


class StoreError(Exception):
    """A statement failed; the message is ClickHouse's (first line, no stack trace)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class StoreUnavailable(StoreError):
    """The store can't serve this now (down, overloaded, misconfigured); retry later."""


class StoreRejected(StoreError):
    """The statement or its data is wrong; the same statement will fail again."""


# Passing conditions of a reachable server, and configuration a person has to fix; in both cases
# the data is fine and must be kept until the store can take it.
UNAVAILABLE_CODES = frozenset(
    {
        3,  # UNEXPECTED_END_OF_FILE (a connection cut mid-answer)
        16,  # NO_SUCH_COLUMN_IN_TABLE (schema not migrated)
        32,  # ATTEMPT_TO_READ_AFTER_EOF
        60,  # UNKNOWN_TABLE
        81,  # UNKNOWN_DATABASE
        159,  # TIMEOUT_EXCEEDED
        160,  # TOO_SLOW
        164,  # READONLY (a writer configured with a read-only user)
        192,  # UNKNOWN_USER
        193,  # WRONG_PASSWORD
        194,  # REQUIRED_PASSWORD
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        203,  # NO_FREE_CONNECTION
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        236,  # ABORTED
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        252,  # TOO_MANY_PARTS
        285,  # TOO_FEW_LIVE_REPLICAS
        286,  # UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE
        319,  # UNKNOWN_STATUS_OF_INSERT
        394,  # QUERY_WAS_CANCELLED
        425,  # SYSTEM_ERROR
        439,  # CANNOT_SCHEDULE_TASK
        473,  # DEADLOCK_AVOIDED
        497,  # ACCESS_DENIED
        516,  # AUTHENTICATION_FAILED
        999,  # KEEPER_EXCEPTION
    }
)

# The statement or the rows themselves.
REJECTED_CODES = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        26,  # CANNOT_PARSE_QUOTED_STRING
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        43,  # ILLEGAL_TYPE_OF_ARGUMENT
        46,  # UNKNOWN_FUNCTION
        47,  # UNKNOWN_IDENTIFIER
        53,  # TYPE_MISMATCH
        62,  # SYNTAX_ERROR
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        128,  # TOO_LARGE_ARRAY_SIZE
        131,  # TOO_LARGE_STRING_SIZE
        190,  # SIZES_OF_ARRAYS_DONT_MATCH
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
        395,  # FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
        407,  # DECIMAL_OVERFLOW
    }
)


def code_of(message: str) -> int | None:
    """The ClickHouse error code in an error message ("Code: 252. DB::Exception: ..."), if any."""
    match = _CODE_RE.search(message)
    return int(match.group(1)) if match else None


def first_line(message: str) -> str:
    """ClickHouse's message on one line, without the stack trace.

    The server's message starts "Code: 62.\nDB::Exception: ..."; chDB's "Code: 62. DB::...".
    """
    text = message.split("Stack trace", 1)[0]
    return " ".join(text.split())[:1000]


def classify(code: int | None, message: str) -> StoreError:
    """The exception for a failed statement with this ClickHouse error code and message."""
    text = first_line(message)
    if code in UNAVAILABLE_CODES:
        return StoreUnavailable(text, code)
    if code in REJECTED_CODES:
        return StoreRejected(text, code)
    return StoreError(text, code)
