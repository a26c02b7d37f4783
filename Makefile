.PHONY: run test
run:   ## set up and run the embedded pipeline on the bundled sample (Ctrl-C to stop)
	scripts/run.sh
test:  ## set up (packages, ClickHouse server, broker) and run all tests
	scripts/test.sh
