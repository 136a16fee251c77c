"""Uses vulture cannot see, for `make deadcode`: names a framework calls, or we call by name.

Parsed by vulture, never imported. Whole classes of dynamic use are patterns in the Makefile
instead: pytest collects `test_*` names, hypothesis runs `@rule` and `@invariant` methods.
"""

# Each entry is a bare attribute access, the use vulture counts.
# ruff: noqa: B018

import http.server
import logging

import grpc
import psycopg
import uvicorn
from hypothesis.stateful import RuleBasedStateMachine
from selenium.webdriver import ChromeOptions

from benchmarks.lookup import LookupSuite
from pdp.client import Client
from pdp.sidecar import supervisor
from pdp.sidecar.metrics import ScrapeCollector
from policy_lang.parser import _Builder, _Callbacks

# grpc calls every server interceptor's intercept_service (sidecar/grpc: AdminAuth, DecodeGuard).
grpc.ServerInterceptor.intercept_service

# uvicorn's serve loop polls should_exit; setting it is how we stop the HTTP server.
uvicorn.Server.should_exit

# hypothesis calls teardown after each run of a stateful test (tests/adversarial/test_stateful.py).
RuleBasedStateMachine.teardown

# _Builder calls the method named after each rule of policy_lang/grammar.lark (see parser._RULES).
_Builder.type_decl, _Builder.attributes_block, _Builder.context_decl, _Builder.attr_decl
_Builder.scalar_type, _Builder.set_type, _Builder.actions_decl, _Builder.relation_decl
_Builder.subject_direct, _Builder.subject_userset, _Builder.subject_wildcard
_Builder.permission_decl, _Builder.role_decl, _Builder.role_scope, _Builder.role_parents
_Builder.type_list, _Builder.bind_when, _Builder.bind_from, _Builder.rule_decl
_Builder.or_, _Builder.and_, _Builder.not_, _Builder.compare, _Builder.in_
_Builder.resource_ref, _Builder.subject_ref_entity, _Builder.entity_ctor, _Builder.method_call
_Builder.set_literal, _Builder.string, _Builder.int_, _Builder.true, _Builder.false

# Public API of the service client: its callers live outside this repository.
Client.batch_check

# psycopg reads a server-side cursor's batch size (pdp/sidecar/store/postgres.py snapshot).
psycopg.ServerCursor.itersize

# Lark calls the parser's callbacks by rule name (policy_lang.parser._Callbacks).
_Callbacks.atom, _Callbacks.userset_atom

# The lookup suite's knobs, set by its smoke test to keep it small (benchmarks/lookup.py).
LookupSuite.reps, LookupSuite.budget, LookupSuite.n_writes

# logging's formatters print a record's exc_text (pdp/sidecar/logs.py sets it, scrubbed).
logging.LogRecord.exc_text

# http.server calls a handler's do_POST and log_message (the OTLP collector in the tests).
http.server.BaseHTTPRequestHandler.do_POST, http.server.BaseHTTPRequestHandler.log_message

# Selenium starts the browser at the binary its options name (tests/authoring/test_playground_browser.py).
ChromeOptions.binary_location

# The parent of `pdp serve --processes N` starts each child as `python -c ...child_main()`.
supervisor.child_main

# prometheus_client calls a registered collector's `collect` at each scrape.
ScrapeCollector.collect
