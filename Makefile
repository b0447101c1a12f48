# Convenience wrappers around tasks.py (which needs only python3 and pip).
.PHONY: main test test-slow test-nt test-jax
main:
	python3 tasks.py main
test:
	python3 tasks.py test
test-slow:
	python3 tasks.py test --slow
test-nt:
	python3 tasks.py test --env nt
test-jax:
	python3 tasks.py test --env jax
