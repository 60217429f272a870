# The image every node of cluster.yaml runs: Ray 2.60 with this project and ALL of its
# dependencies (pyproject.toml's [project] dependencies) already installed, so that a node
# installs nothing when it boots (an autoscaled or replaced spot worker is ready as soon as the
# image is pulled) and no dependency is missing on any node. Build and push it under the tag
# that cluster.yaml's docker.image names (README.md, "On a GPU cluster"):
#   docker build -t <registry>/cvae-ray:<tag> . && docker push <registry>/cvae-ray:<tag>
# Jobs still run the code that `ray job submit --working-dir .` uploads: Ray puts that folder
# first on the path of the job and of its workers. The copy installed here brings the
# dependencies and the console scripts (cvae-data, cvae-test, ...).
#
# Pinned, never `latest`: Ray on the nodes must be exactly the Ray of the machine that submits
# jobs (2.60.0). The `-gpu` variant carries CUDA and `ray[all]` (Train, Tune, Data, dashboard,
# pyarrow, boto3 for the autoscaler) and also runs the CPU head.
FROM rayproject/ray:2.60.0-py311-gpu

# No pip cache in the image: nothing reads it again.
ENV PIP_NO_CACHE_DIR=1

# Layers from the one that changes least to the one that changes most, so that a code change
# rebuilds only the last one.
#
# 1. torch and torchvision: the largest layer. A CUDA build from PyTorch's index, pinned to the
#    versions the project is tested with. The wheels bring their own CUDA libraries; the nodes'
#    NVIDIA driver must support that CUDA version (TORCH_CUDA picks another build).
ARG TORCH_CUDA=cu130
RUN pip install --index-url https://download.pytorch.org/whl/${TORCH_CUDA} \
        torch==2.14.1 torchvision==0.29.1

# The versions later installs must keep: the image's Ray (a pip that replaced it would break the
# client/cluster protocol) and the torch above (a PyPI build could replace the CUDA one). A
# dependency that needs another version of these fails the build instead of changing them.
RUN pip list --format=freeze | grep -iE '^(ray|torch|torchvision)==' > /home/ray/cvae-ray-pins.txt

# 2. The dependencies, read from pyproject.toml alone: rebuilt when the dependencies change, not
#    at every code change. boto3: the head's autoscaler talks to EC2 with it (1.4.8 adds
#    InstanceMarketOptions, the spot workers); the base image has it, this only makes sure.
COPY pyproject.toml /tmp/cvae-ray-deps/pyproject.toml
RUN python -c "import tomllib; f = open('/tmp/cvae-ray-deps/pyproject.toml', 'rb'); \
        print('\n'.join(tomllib.load(f)['project']['dependencies']))" > /tmp/cvae-ray-requirements.txt \
    && pip install -c /home/ray/cvae-ray-pins.txt -r /tmp/cvae-ray-requirements.txt \
        "boto3>=1.4.8"

# 3. The project itself, WITH its dependencies (pip finds them all installed by now, so this
#    adds only the project; should one be missing, it is installed here, not on a node).
#    1000:100 is the image's user `ray` (group `users`): pip builds in the copied folder.
COPY --chown=1000:100 . /home/ray/cvae-ray
RUN pip install -c /home/ray/cvae-ray-pins.txt /home/ray/cvae-ray
