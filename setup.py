from setuptools import setup

setup(
    name='capsnet',
    version='0.1.0',
    description='CapsNet ("Dynamic Routing Between Capsules", Sabour et al. '
                '2017) in Chainer, on NumPy and CuPy',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=['capsnet', 'capsnet.kernels'],
    package_data={'capsnet': ['web/*.html', 'web/*.js', 'web/*.css']},
    python_requires='>=3.11',
    install_requires=['chainer==7.8.1', 'numpy>=1.26', 'matplotlib>=3.5',
                      'scipy>=1.10'],
    extras_require={
        # CuPy 14 needs NumPy >= 2; capsnet.compat makes chainer run on it
        'cuda12': ['cupy-cuda12x>=14'],
        'cuda13': ['cupy-cuda13x>=14'],
        'mpi': ['mpi4py>=4', 'mpich>=4'],
        # the PyTorch references of bench/ (docs/speed.md's tables used 2.13.0,
        # the CPU build)
        'bench': ['torch==2.13.0'],
        'test': ['pytest>=7', 'selenium>=4.10', 'mpi4py>=4', 'mpich>=4'],
    },
    license='MIT',
)
