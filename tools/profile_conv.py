"""Time the pieces of a Convolution forward+backward alone: ``python tools/profile_conv.py float32``.

Each piece is repeated on reused buffers; the median is printed in ms. dW_einsum is an
alternative formulation kept for comparison (not in the total).
"""
import time, sys
import numpy as np
import nnkernels as K
dt = np.dtype(sys.argv[1] if len(sys.argv) > 1 else "float32")
shapes = {"A": (100,1,28,28,30,5,5,1,0), "B": (100,16,14,14,32,3,3,1,1), "C": (64,64,32,32,64,3,3,1,1)}
rng = np.random.default_rng(0)
def med(f, r=9):
    f(); ts=[]
    for _ in range(r):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    return np.median(ts)*1e3
for name,(N,C,H,W,FN,FH,FW,s,p) in shapes.items():
    x=rng.standard_normal((N,C,H,W)).astype(dt); Wt=rng.standard_normal((FN,C*FH*FW)).astype(dt)
    cols=K.im2col_per_sample(x,FH,FW,s,p); OH=OW=int(np.sqrt(cols.shape[2])); P=cols.shape[2]
    d=rng.standard_normal((N,FN,P)).astype(dt)
    out=np.empty((N,FN,P),dt); dcols=np.empty_like(cols); dx=np.empty_like(x)
    r={}
    r['im2col']=med(lambda: K.im2col_per_sample(x,FH,FW,s,p,out=cols))
    r['fwd_gemm']=med(lambda: np.matmul(Wt,cols,out=out))
    r['dW']=med(lambda: np.matmul(d, cols.transpose(0,2,1)).sum(0))
    r['dW_einsum']=med(lambda: np.einsum('nfp,nkp->fk', d, cols, optimize=True))
    r['dcol_gemm']=med(lambda: np.matmul(Wt.T,d,out=dcols))
    r['col2im']=med(lambda: K.col2im_per_sample(dcols,x.shape,FH,FW,s,p,out=dx))
    r['db']=med(lambda: d.sum(axis=(0,2)))
    print(name, dt, "  ".join(f"{k}={v:.2f}" for k,v in r.items()), f"total={sum(v for k,v in r.items() if k!='dW_einsum'):.1f}ms")
