import os

# Every test runs offline: no test may reach the Hugging Face Hub.
os.environ.setdefault('HF_HUB_OFFLINE', '1')
