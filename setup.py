from setuptools import find_namespace_packages, setup

setup(
    name="dkl4dstem",
    version="0.1.0",
    description="Deep-kernel-learning automated 4D-STEM experiments: engine, CLI and Nion Swift plug-in",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_namespace_packages(include=["dkl4dstem*", "nionswift_plugin.*"]) + ["dkl4dstem.resources"],
    package_dir={"dkl4dstem.resources": "resources"},
    package_data={"dkl4dstem.resources": ["*.npz", "*.md"]},
    install_requires=[
        "numpy>=1.26",
        "scipy>=1.11",
        "torch>=2.1",  # install torch==2.13.0 (CPU) first: see README
        "gpytorch>=1.11",
        "botorch>=0.12",
        "h5py>=3.9",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "emdfile>=0.0.14",  # EMD 1.0 results py4DSTEM opens (pure Python)
    ],
    extras_require={
        "swift": ["nionswift>=16.10", "nionswift-instrumentation>=23.0", "nionui>=10.0", "nionutils>=4.10"],
        "test": ["pytest>=7", "nionswift>=16.10", "nionswift-instrumentation>=23.0", "nionswift-usim>=5.4",
                 "nionui>=10.0", "nionutils>=4.10", "dask>=2024.1", "distributed>=2024.1",
                 "rosettasciio>=0.6", "zarr>=3"],  # zarr 3: the tests write the .zspy layout with its API
        "sim": ["abtem>=1.0", "ase>=3.22"],
        "dask": ["dask>=2024.1", "distributed>=2024.1"],
        "io": ["rosettasciio>=0.6", "zarr>=2.16"],  # Gatan .dm3/.dm4, Velox .emd (rosettasciio); HyperSpy .zspy
    },
    entry_points={"console_scripts": ["dkl4dstem=dkl4dstem.cli:main"]},
    classifiers=["Programming Language :: Python :: 3", "Framework :: Nion Swift"],
)
