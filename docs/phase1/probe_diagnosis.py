"""Why the in-bundle phase-1 probe Dice stays ~0: distribution of the teacher's channel-1 probability at the
validation t (500) vs at training's random t, and the probe's decision threshold."""
import json, sys, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "scripts"))
from phase1_report import _load_split
from monai.bundle import ConfigParser
from custom_components.networks import load_teacher_weights, ChannelProbe
from custom_components.losses import HardTargetDiceLoss
from custom_components.engines.pretrain import _fg_dice
P = sys.argv[1]
torch.set_num_threads(1)
cp = ConfigParser(); cp.read_config([f"{P}/configs/train.json", f"{P}/configs/runner_overrides.json"])
teacher = cp.get_parsed_content("network_def"); load_teacher_weights(teacher, f"{P}/models/teacher.pt"); teacher.eval()
roi = cp.get_parsed_content("roi_size"); dl = cp.get_parsed_content("datalist")
xt, yt = _load_split(dl, "labeled", roi); xv, yv = _load_split(dl, "validation", roi)
st = torch.load(f"{P}/models/train_state.pt", map_location="cpu", weights_only=False)
probe = ChannelProbe(2, 2); probe.load_state_dict(st["probe"]); probe.eval()
with torch.no_grad():
    pv = teacher.predict(xv)[0]  # t = 500, fixed noise (the monitor's input)
    g = torch.Generator().manual_seed(0)
    prand = torch.cat([teacher.segment(xv, torch.randint(0, 1000, (xv.shape[0],), generator=g)).softmax(1) for _ in range(4)])
    yr = yv.repeat(4, 1, 1, 1)
fg = yv[:, 0] == 1
print("val t=500: p1 on lesion pixels: quartiles", torch.quantile(pv[:, 1][fg], torch.tensor([.1, .25, .5, .75, .9])).tolist())
print("val t=500: p1 on background : quartiles", torch.quantile(pv[:, 1][~fg], torch.tensor([.1, .25, .5, .75, .9])).tolist())
fr = yr[:, 0] == 1
print("random t : p1 on lesion pixels: quartiles", torch.quantile(prand[:, 1][fr], torch.tensor([.1, .25, .5, .75, .9])).tolist())
print("random t : p1 on background : quartiles", torch.quantile(prand[:, 1][~fr], torch.tensor([.1, .25, .5, .75, .9])).tolist())
W, b = probe.conv.weight.flatten(1), probe.conv.bias
a = (W[1, 1] - W[0, 1]) - (W[1, 0] - W[0, 0]); c = (W[1, 0] - W[0, 0]) + b[1] - b[0]
print(f"saved probe: foreground where p1 > {float(-c / a):.3f}")
with torch.no_grad():
    print("saved probe val Dice (t=500):", float(_fg_dice(probe(pv).argmax(1, keepdim=True), yv, 2).nanmean()))
    for thr in (0.3, 0.4, 0.5, 0.6):
        print(f"  channel-1 >= {thr}: val Dice", float(_fg_dice((pv[:, 1:2] >= thr).long(), yv, 2).nanmean()))
# a probe trained as the bundle does (Adam lr 0.01, soft Dice), but on t = 500 inputs, from the saved probe's init
for name, inp in (("t=500 inputs", lambda: teacher.predict(xt)[0]),):
    torch.manual_seed(0); pr = ChannelProbe(2, 2); opt = torch.optim.Adam(pr.parameters(), lr=0.01); lf = HardTargetDiceLoss()
    with torch.no_grad(): ptr = inp()
    for step in range(1, 401):
        opt.zero_grad(); lf(pr(ptr), yt).backward(); opt.step()
        if step in (50, 100, 200, 400):
            with torch.no_grad():
                print(f"fresh probe, {name}, {step} steps: val Dice", float(_fg_dice(pr(pv).argmax(1, keepdim=True), yv, 2).nanmean()))
