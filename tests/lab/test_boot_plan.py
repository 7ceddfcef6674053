"""The boot stage's plan with power (pure, no root): per node, power through the BMC with a
one-time PXE, by hand without a BMC or with --no-power; running nodes are skipped; a rack that
boots its machines itself plans nothing; --kernel/--initramfs skip the Image Factory."""

from __future__ import annotations

from netns import with_catalog_versions

from cloudctl.inventory import parse_inventory
from cloudctl.pipeline.plan import Action
from cloudctl.pipeline.stages import Boot, BootFacts, Image, ImageFacts

INV = parse_inventory(with_catalog_versions("""
cluster: {name: demo, talosVersion: TALOS_VERSION, kubernetesVersion: K8S_VERSION,
          vip: 10.20.0.10}
network: {interface: eth0, bootServer: 10.20.0.2, subnet: 10.20.0.0/24, gateway: 10.20.0.1}
platform: {metallb: {enabled: false}}
nodes:
  - {name: rf, role: controlplane, macs: ["52:54:00:10:00:31"], ip: 10.20.0.31,
     installDisk: /dev/vda,
     bmc: {type: redfish, address: 10.30.0.31, username: admin, passwordRef: env:PW}}
  - {name: ipmi, role: worker, macs: ["52:54:00:10:00:32"], ip: 10.20.0.32,
     installDisk: /dev/vda,
     bmc: {type: ipmi, address: 10.30.0.32, port: 6230, username: admin,
           passwordRef: env:PW}}
  - {name: bare, role: worker, macs: ["52:54:00:10:00:33"], ip: 10.20.0.33,
     installDisk: /dev/vda}
""")).inventory
METHOD = "serve DHCP"


def _lines(facts: BootFacts) -> dict[str | None, tuple[Action, str]]:
    return {s.target: (s.action, s.reason) for s in Boot().plan(INV, facts).steps}


def test_plan_powers_nodes_with_a_bmc_through_it() -> None:
    steps = _lines(BootFacts(running=set(), method=METHOD))
    assert steps == {
        "rf": (Action.RUN, "serve DHCP; power on through BMC redfish https://10.30.0.31:443, "
                           "one-time PXE"),
        "ipmi": (Action.RUN, "serve DHCP; power on through BMC ipmi ipmi://10.30.0.32:6230, "
                             "one-time PXE"),
        "bare": (Action.RUN, "serve DHCP; no BMC: power it on by hand"),
    }


def test_no_power_leaves_every_node_to_the_operator_and_running_nodes_are_skipped() -> None:
    steps = _lines(BootFacts(running={"ipmi"}, method=METHOD, power=False))
    assert steps["rf"] == (Action.RUN, "serve DHCP; --no-power: power it on by hand (BMC "
                                       "redfish https://10.30.0.31:443 not used)")
    assert steps["ipmi"] == (Action.SKIP, "runs Talos in normal mode")
    assert steps["bare"] == (Action.RUN, "serve DHCP; no BMC: power it on by hand")


def test_unknown_live_state_still_powers_and_says_so() -> None:
    steps = _lines(BootFacts(running=None, method=METHOD))
    assert steps["rf"][1].startswith("serve DHCP (live state unknown); power on through BMC")


def test_a_rack_that_boots_itself_powers_nothing() -> None:
    plan = Boot().plan(INV, BootFacts(running=None, method=None))
    assert [s.action for s in plan.steps] == [Action.SKIP]
    assert "BMC" not in plan.steps[0].reason


def test_given_kernel_skips_the_image_factory() -> None:
    plan = Image().plan(INV, ImageFacts(render_current=True, assets_needed=True,
                                        assets_cached=True, assets_given=True))
    assets = next(s for s in plan.steps if s.target == "assets")
    assert assets.action is Action.SKIP
    assert "given (--kernel/--initramfs)" in assets.reason
