"""Create the cluster's AWS security group before the first `ray up`, with SSH from one CIDR.

    python -m ray_jobs.cluster_sg cluster.yaml

Ray's AWS provider, when it creates the group named in `provider.security_group.GroupName`
itself, adds SSH (22) from 0.0.0.0/0 and only appends `provider.security_group.IpPermissions`
to it; a group of that name that already has rules is used as it is. This creates the group in
the default VPC of `provider.region` with exactly those IpPermissions plus all traffic between
the group's own members (the cluster's nodes), so the CIDR in cluster.yaml is the only way in.
An existing group is checked, not changed. Needs boto3 and AWS credentials.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

OPEN_CIDRS = {"0.0.0.0/0", "::/0"}


def ingress_rules(cfg: dict) -> list[dict]:
    """The inbound rules of cluster.yaml's security group, refused if any opens to the world."""
    sg = cfg.get("provider", {}).get("security_group", {})
    if not sg.get("GroupName"):
        raise ValueError("cluster.yaml: provider.security_group.GroupName is not set")
    rules = sg.get("IpPermissions") or []
    if not rules:
        raise ValueError("cluster.yaml: provider.security_group.IpPermissions is empty: "
                         "no SSH rule, `ray up` could not reach the nodes")
    wide = open_rules(rules)
    if wide:
        raise ValueError(f"cluster.yaml: security-group rule open to the world: {wide}")
    return rules


def open_rules(permissions: list[dict]) -> list[dict]:
    """The rules (as EC2 describes them) that let anyone in."""
    def cidrs(p: dict) -> set:
        return ({r.get("CidrIp") for r in p.get("IpRanges", [])}
                | {r.get("CidrIpv6") for r in p.get("Ipv6Ranges", [])})

    return [p for p in permissions if OPEN_CIDRS & cidrs(p)]


def ensure_group(cfg: dict) -> str:
    import boto3

    rules = ingress_rules(cfg)
    name = cfg["provider"]["security_group"]["GroupName"]
    ec2 = boto3.client("ec2", region_name=cfg["provider"]["region"])
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise ValueError(f"no default VPC in {cfg['provider']['region']}")
    vpc = vpcs[0]["VpcId"]
    found = ec2.describe_security_groups(Filters=[
        {"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc]}],
    )["SecurityGroups"]
    if found:
        group = found[0]
        if not group["IpPermissions"]:
            raise ValueError(f"security group {name} exists without rules: `ray up` would add "
                             "SSH from 0.0.0.0/0 to it; delete it and run this again")
        if open_rules(group["IpPermissions"]):
            raise ValueError(f"security group {name} lets anyone in: "
                             f"{open_rules(group['IpPermissions'])}")
        return group["GroupId"]
    group_id = ec2.create_security_group(
        GroupName=name, VpcId=vpc, Description=f"Ray cluster {cfg.get('cluster_name', '')}",
    )["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id}]}, *rules])
    return group_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, nargs="?", default=Path("cluster.yaml"))
    args = parser.parse_args(argv)
    cfg = yaml.safe_load(args.config.read_text())
    try:
        group_id = ensure_group(cfg)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"security group {cfg['provider']['security_group']['GroupName']}: {group_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
