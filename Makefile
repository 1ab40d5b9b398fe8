.PHONY: setup test app bench bench-gpu
setup:
	./setup.sh
test:
	.venv/bin/python -m pytest -q
app:
	.venv/bin/streamlit run app.py
bench:
	.venv/bin/python -m bench.run_all
bench-gpu:
	.venv/bin/python -m bench.run_gpu
