"""upt_jax: unified post-training for LLMs in JAX."""

from setuptools import find_namespace_packages, setup

CORE = [
    # jax and flax are pinned together: flax 0.12.8 is tested against jax 0.10.x.
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.11",
    "chex>=0.1.90",
    "ml_collections>=1.0",
    "grain>=0.2.10",
    "safetensors>=0.5",
    "transformers>=4.50",
    "math-verify>=0.8",
    "tqdm>=4.66",
    "matplotlib>=3.8",
    "numpy>=1.26",
    # parquet and `datasets.save_to_disk` (Arrow) readers.
    "pyarrow>=14",
    # QLoRA: the frozen base's int8/int4/nf4 quantisation (upt_jax.models.lora).
    "qwix==0.1.8",
]

TEST = [
    "pytest>=8",
    "pytest-xdist>=3.5",
    "hypothesis>=6.100",
    # CPU build from local disk; used only for parity tests against transformers.
    "torch==2.13.0",
    # the PEFT-layout LoRA export is loaded back with peft in the parity tests.
    "peft>=0.17",
    # writes the `save_to_disk` fixtures the Arrow reader is tested on.
    "datasets>=3",
    # the optional TensorBoard writer (extra "tb") is tested too.
    "tensorboardX>=2.6",
    # notebooks/ (jupytext percent .py paired with .ipynb) are executed by tests/test_notebooks.py
    "jupytext>=1.16",
    "nbclient>=0.10",
    "ipykernel>=6.29",
    # the one formatter config (ruff.toml); tests/test_layers.py checks the tree is formatted with it
    "ruff==0.17.6",
]

setup(
    name="upt_jax",
    version="0.1.0",
    description="Unified post-training (SFT, DPO, PPO, GRPO, distillation, HPT) in JAX",
    python_requires=">=3.10",
    # experiments/ are config files loaded by path (upt_jax.config_files), not an installed package
    # namespace discovery: the data-only folders (bases/<name>/) are packages too, so setuptools does not
    # warn that they "would be ignored" on every install (their files come from package_data either way)
    packages=find_namespace_packages(include=["upt_jax", "upt_jax.*"], exclude=["*.__pycache__"]),
    include_package_data=True,
    package_data={"upt_jax": ["data/benchmarks/*", "data/benchmarks/**/*", "bases/*/*"]},
    install_requires=CORE,
    extras_require={
        "test": TEST,
        "dev": TEST,
        "tfds": ["tensorflow-datasets"],
        "tb": ["tensorboardX>=2.6"],
    },
    entry_points={"console_scripts": ["upt=upt_jax.cli:main"]},
)
